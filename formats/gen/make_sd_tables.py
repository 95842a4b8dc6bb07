#!/usr/bin/env python3
"""Generate formats/sd15.tsv and formats/sdxl.tsv: every Linear and Conv2d module of the
Stable Diffusion 1.5 and SDXL U-Nets and text encoders, with its canonical (diffusers) path,
kohya LoRA name, kind, weight shape and single-file (ldm / SGM) checkpoint name.

Needs torch, diffusers and transformers (models are built on the meta device from configs written
below, so nothing is downloaded and no memory is used). Run from the repository root:

    python3 formats/gen/make_sd_tables.py            # write the tables
    python3 formats/gen/make_sd_tables.py --check    # also cross-check against diffusers' own
                                                     # converters (see validate_*)

Naming rules (written from the reference notes, not copied from any tool):
- canonical: `<component>.<diffusers module path>`, components unet, text_encoder, text_encoder_2.
- kohya SD 1.x: `lora_unet_` / `lora_te_` + the diffusers path with `.` -> `_`.
- kohya SDXL: sd-scripts' SDXL U-Net uses the original (SGM) block names, so `lora_unet_` + the SGM
  path with `.` -> `_`; text encoders `lora_te1_` / `lora_te2_` + the transformers path.
- ldm: the module's tensor-name prefix in the original single-file checkpoint. SDXL text encoder 2
  is OpenCLIP, whose q/k/v live in one fused `attn.in_proj_weight`: written `attn.in_proj#q` etc.
"""

import os
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HEADER = "#canonical_path\tkohya_name\tkind\tout\tin\tkh\tkw\tldm_name\n"


def sd15_unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=64,
        block_out_channels=(320, 640, 1280, 1280),
        cross_attention_dim=768,
        attention_head_dim=8,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        layers_per_block=2,
    )


def sdxl_unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=128,
        block_out_channels=(320, 640, 1280),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2, 10),
        attention_head_dim=(5, 10, 20),
        cross_attention_dim=2048,
        addition_embed_type="text_time",
        addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=2816,
        use_linear_projection=True,
        layers_per_block=2,
    )


def clip(hidden, layers, inter, heads, projection=False):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cfg = CLIPTextConfig(hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                         num_attention_heads=heads, vocab_size=49408, max_position_embeddings=77,
                         projection_dim=hidden)
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(cfg)


RESNET = {"conv1": "in_layers.2", "conv2": "out_layers.3", "time_emb_proj": "emb_layers.1",
          "conv_shortcut": "skip_connection"}


def sgm_path(path, up_has_attn, layers_per_block=2):
    """diffusers U-Net module path -> SGM/ldm path (without the model.diffusion_model. prefix)."""
    p = path.split(".")
    top = {"conv_in": "input_blocks.0.0", "conv_out": "out.2", "time_embedding.linear_1": "time_embed.0",
           "time_embedding.linear_2": "time_embed.2", "add_embedding.linear_1": "label_emb.0.0",
           "add_embedding.linear_2": "label_emb.0.2"}
    if path in top:
        return top[path]
    n = layers_per_block

    def resnet_tail(rest):
        return RESNET[rest[0]] if rest[0] in RESNET else ".".join(rest)

    if p[0] == "down_blocks":
        i, kind = int(p[1]), p[2]
        if kind == "downsamplers":  # down_blocks.i.downsamplers.0.conv
            return f"input_blocks.{(n + 1) * (i + 1)}.0.op"
        j = int(p[3])
        block = (n + 1) * i + j + 1
        if kind == "resnets":
            return f"input_blocks.{block}.0.{resnet_tail(p[4:])}"
        return f"input_blocks.{block}.1." + ".".join(p[4:])
    if p[0] == "mid_block":
        kind, j = p[1], int(p[2])
        if kind == "resnets":
            return f"middle_block.{2 * j}.{resnet_tail(p[3:])}"
        return "middle_block.1." + ".".join(p[3:])
    if p[0] == "up_blocks":
        i, kind = int(p[1]), p[2]
        if kind == "upsamplers":  # up_blocks.i.upsamplers.0.conv
            return f"output_blocks.{(n + 1) * i + n}.{2 if up_has_attn[i] else 1}.conv"
        j = int(p[3])
        block = (n + 1) * i + j
        if kind == "resnets":
            return f"output_blocks.{block}.0.{resnet_tail(p[4:])}"
        return f"output_blocks.{block}.1." + ".".join(p[4:])
    raise ValueError(f"no SGM name for {path}")


def te2_ldm(path):
    """transformers CLIP path of SDXL text encoder 2 -> OpenCLIP name."""
    p = path.split(".")  # text_model.encoder.layers.N.<self_attn.x | mlp.fcK>
    n = p[3]
    base = f"conditioner.embedders.1.model.transformer.resblocks.{n}"
    leaf = ".".join(p[4:])
    fused = {"self_attn.q_proj": "attn.in_proj#q", "self_attn.k_proj": "attn.in_proj#k",
             "self_attn.v_proj": "attn.in_proj#v", "self_attn.out_proj": "attn.out_proj",
             "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}
    return f"{base}.{fused[leaf]}"


def modules(model, keep):
    rows = []
    for name, m in model.named_modules():
        if isinstance(model, torch.nn.Module) and type(model).__name__.startswith("CLIPText"):
            # transformers 5 flattened CLIPTextModel (no `text_model.` level); checkpoints and
            # canonical paths keep it
            name = name if name.startswith("text_model.") else f"text_model.{name}"
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)) and keep(name):
            w = m.weight.shape
            if isinstance(m, torch.nn.Conv2d):
                rows.append((name, "conv", w[0], w[1], w[2], w[3]))
            else:
                rows.append((name, "linear", w[0], w[1], 1, 1))
    return rows


def te_keep(name):
    return name.startswith("text_model.encoder.layers.")


def build(family):
    with torch.device("meta"):
        if family == "sd15":
            unet = sd15_unet()
            tes = [("text_encoder", "lora_te_", clip(768, 12, 3072, 12),
                    lambda p: f"cond_stage_model.transformer.{p}")]
        else:
            unet = sdxl_unet()
            tes = [("text_encoder", "lora_te1_", clip(768, 12, 3072, 12),
                    lambda p: f"conditioner.embedders.0.transformer.{p}"),
                   ("text_encoder_2", "lora_te2_", clip(1280, 32, 5120, 20, projection=True), te2_ldm)]
    up_has_attn = [hasattr(b, "attentions") and b.attentions is not None for b in unet.up_blocks]
    rows = []
    for name, kind, o, i, kh, kw in modules(unet, lambda n: True):
        sgm = sgm_path(name, up_has_attn)
        kohya_path = sgm if family == "sdxl" else name
        rows.append((f"unet.{name}", "lora_unet_" + kohya_path.replace(".", "_"), kind, o, i, kh, kw,
                     f"model.diffusion_model.{sgm}"))
    for comp, prefix, model, ldm in tes:
        for name, kind, o, i, kh, kw in modules(model, te_keep):
            rows.append((f"{comp}.{name}", prefix + name.replace(".", "_"), kind, o, i, kh, kw, ldm(name)))
    rows.sort(key=lambda r: r[0])
    return rows, unet


def write(family, rows):
    path = os.path.join(ROOT, "formats", f"{family}.tsv")
    with open(path, "w", newline="\n") as f:
        f.write(HEADER)
        for r in rows:
            f.write("\t".join(str(x) for x in r) + "\n")
    by_comp = {}
    for r in rows:
        c = r[0].split(".", 1)[0]
        by_comp[c] = by_comp.get(c, 0) + 1
    print(f"{family}: {len(rows)} rows {by_comp} -> {path}")


def validate_unique(family, rows):
    for col, what in ((0, "canonical path"), (1, "kohya name"), (7, "ldm name")):
        seen = [r[col] for r in rows]
        assert len(seen) == len(set(seen)), f"{family}: duplicate {what}"


def validate_ldm_with_diffusers(family, rows, unet):
    """Feed the SGM names (as a fake single-file checkpoint) to diffusers' own ldm->diffusers
    converter and check that it lands every tensor on our canonical path."""
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    ckpt = {}
    expected = {}
    for r in rows:
        if not r[0].startswith("unet."):
            continue
        shape = (r[3], r[4], r[5], r[6]) if r[2] == "conv" else (r[3], r[4])
        ckpt[r[7] + ".weight"] = torch.zeros(1)
        ckpt[r[7] + ".bias"] = torch.zeros(1)
        expected[r[0][len("unet."):] + ".weight"] = r[7] + ".weight"
    # norms and other non-Linear tensors the converter expects
    for name, m in unet.named_modules():
        if isinstance(m, (torch.nn.GroupNorm, torch.nn.LayerNorm)):
            up_has_attn = [b.attentions is not None if hasattr(b, "attentions") else False for b in unet.up_blocks]
            try:
                sgm = sgm_path(name, up_has_attn)
            except (ValueError, KeyError):
                continue
            ckpt[f"model.diffusion_model.{sgm}.weight"] = torch.zeros(1)
            ckpt[f"model.diffusion_model.{sgm}.bias"] = torch.zeros(1)
    cfg = dict(unet.config)
    cfg["layers_per_block"] = 2
    try:
        converted = convert_ldm_unet_checkpoint(ckpt, cfg)
    except Exception as e:  # a converter that needs more keys: report, do not hide
        print(f"  {family}: diffusers ldm converter could not run on the synthetic checkpoint: {e!r}")
        return
    bad = [k for k in expected if k not in converted]
    print(f"  {family}: diffusers' ldm->diffusers converter placed {len(expected) - len(bad)}/{len(expected)} "
          f"U-Net weights on our canonical paths")
    assert not bad, bad[:10]


def validate_kohya_with_diffusers(family, rows, unet):
    """Run kohya-named keys through diffusers' kohya loader and check the diffusers paths."""
    from diffusers.loaders import StableDiffusionLoraLoaderMixin, StableDiffusionXLLoraLoaderMixin

    mixin = StableDiffusionXLLoraLoaderMixin if family == "sdxl" else StableDiffusionLoraLoaderMixin
    sd = {}
    for r in rows:
        sd[r[1] + ".lora_down.weight"] = torch.zeros(1, r[4])
        sd[r[1] + ".lora_up.weight"] = torch.zeros(r[3], 1)
        sd[r[1] + ".alpha"] = torch.tensor(1.0)
    from diffusers.utils import convert_state_dict_to_diffusers, convert_state_dict_to_peft, convert_unet_state_dict_to_peft

    state = mixin.lora_state_dict(sd, unet_config=unet.config)[0]
    got = set()
    for comp in ("unet", "text_encoder", "text_encoder_2"):
        part = {k[len(comp) + 1:]: v for k, v in state.items() if k.startswith(comp + ".")}
        if not part:
            continue
        if comp == "unet":
            part = convert_unet_state_dict_to_peft(part)
        else:
            part = convert_state_dict_to_peft(convert_state_dict_to_diffusers(part))
        got |= {f"{comp}.{k.rsplit('.lora_A.weight', 1)[0]}" for k in part if k.endswith(".lora_A.weight")}
    want = {r[0] for r in rows}
    missing = sorted(want - got)
    extra = sorted(got - want)
    print(f"  {family}: diffusers' kohya loader mapped {len(want & got)}/{len(want)} of our kohya names onto "
          f"our canonical paths; {len(missing)} not mapped the same way, {len(extra)} unexpected")
    for m in missing[:8]:
        print("    ours only:", m)
    for m in extra[:8]:
        print("    diffusers only:", m)


def main():
    check = "--check" in sys.argv[1:]
    for family in ("sd15", "sdxl"):
        rows, unet = build(family)
        validate_unique(family, rows)
        write(family, rows)
        if check:
            validate_ldm_with_diffusers(family, rows, unet)
            validate_kohya_with_diffusers(family, rows, unet)


if __name__ == "__main__":
    main()
