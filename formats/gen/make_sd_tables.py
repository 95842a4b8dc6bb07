#!/usr/bin/env python3
"""Generate formats/sd15.tsv and formats/sdxl.tsv.

One row per nn.Linear / nn.Conv2d module of the Stable Diffusion 1.5 and SDXL U-Nets and of the
attention/MLP layers of their text encoders, with the canonical (diffusers) path, the kohya
sd-scripts LoRA name, the kind, the weight shape and the tensor-name prefix in the original
single-file (ldm / SGM) checkpoint.

Needs torch, diffusers and transformers. The models are instantiated on the meta device from the
configs written below: nothing is downloaded and no weight memory is allocated. Run from anywhere:

    python3 formats/gen/make_sd_tables.py                 # write both tables (+ self-checks)
    python3 formats/gen/make_sd_tables.py --check         # also cross-check with diffusers'
                                                          # converters and the kohya fixtures
    python3 formats/gen/make_sd_tables.py --check --fixtures DIR_OR_FILE [...]

The mapping logic below is written from the architecture itself (block order of the SGM U-Net),
not taken from any converter; diffusers' converters are only used as an oracle under --check.
"""

import glob
import json
import os
import struct
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLUMNS = ["canonical_path", "kohya_name", "kind", "out", "in", "kh", "kw", "ldm_name"]
HEADER = "#" + "\t".join(COLUMNS) + "\n"


# --------------------------------------------------------------------------------------------
# models (meta device)
# --------------------------------------------------------------------------------------------

def sd15_unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=64,
        in_channels=4,
        out_channels=4,
        block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=2,
        cross_attention_dim=768,
        attention_head_dim=8,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                          "DownBlock2D"),
        mid_block_type="UNetMidBlock2DCrossAttn",
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
                        "CrossAttnUpBlock2D"),
    )


def sdxl_unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=128,
        in_channels=4,
        out_channels=4,
        block_out_channels=(320, 640, 1280),
        layers_per_block=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        mid_block_type="UNetMidBlock2DCrossAttn",
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2, 10),
        attention_head_dim=(5, 10, 20),
        cross_attention_dim=2048,
        addition_embed_type="text_time",
        addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=2816,
        use_linear_projection=True,
    )


def clip_text(hidden, layers, intermediate, heads, with_projection=False):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cfg = CLIPTextConfig(hidden_size=hidden, intermediate_size=intermediate,
                         num_hidden_layers=layers, num_attention_heads=heads, vocab_size=49408,
                         max_position_embeddings=77, projection_dim=hidden)
    cls = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    return cls(cfg)


# --------------------------------------------------------------------------------------------
# diffusers U-Net path -> SGM (original Stability / ldm) U-Net path
# --------------------------------------------------------------------------------------------
#
# The SGM U-Net is a flat list of "input_blocks", a 3-element "middle_block" and a flat list of
# "output_blocks"; every entry is a small list of layers. Walking the diffusers U-Net in forward
# order and numbering those entries gives the correspondence:
#   input_blocks.0      = [conv_in]
#   per down level i, per layer j: input_blocks.k = [resnet j, (attention j)]
#   per down level with a downsampler: input_blocks.k = [downsampler]   (its conv is called "op")
#   middle_block        = [resnet 0, attention 0, resnet 1]
#   per up level i, per layer j: output_blocks.k = [resnet j, (attention j), (upsampler if last j)]
#   out                 = [norm, SiLU, conv_out]

RESNET_LEAF = {  # diffusers ResnetBlock2D child -> SGM ResBlock child
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
TOP_LEVEL = {  # diffusers U-Net top-level module -> SGM module
    "conv_in": "input_blocks.0.0",
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}


def sgm_block_map(unet):
    """{diffusers container prefix: (SGM prefix, container kind)} for one diffusers U-Net."""
    blocks = {}
    k = 1  # input_blocks.0 is conv_in
    for i, down in enumerate(unet.down_blocks):
        attns = getattr(down, "attentions", None)
        for j in range(len(down.resnets)):
            blocks[f"down_blocks.{i}.resnets.{j}"] = (f"input_blocks.{k}.0", "resnet")
            if attns is not None:
                blocks[f"down_blocks.{i}.attentions.{j}"] = (f"input_blocks.{k}.1", "attention")
            k += 1
        if getattr(down, "downsamplers", None) is not None:
            blocks[f"down_blocks.{i}.downsamplers.0"] = (f"input_blocks.{k}.0", "downsampler")
            k += 1
    mid = unet.mid_block
    assert len(mid.resnets) == 2 and len(mid.attentions) == 1, "expected resnet/attention/resnet mid"
    blocks["mid_block.resnets.0"] = ("middle_block.0", "resnet")
    blocks["mid_block.attentions.0"] = ("middle_block.1", "attention")
    blocks["mid_block.resnets.1"] = ("middle_block.2", "resnet")
    k = 0
    for i, up in enumerate(unet.up_blocks):
        attns = getattr(up, "attentions", None)
        n = len(up.resnets)
        for j in range(n):
            blocks[f"up_blocks.{i}.resnets.{j}"] = (f"output_blocks.{k}.0", "resnet")
            pos = 1
            if attns is not None:
                blocks[f"up_blocks.{i}.attentions.{j}"] = (f"output_blocks.{k}.1", "attention")
                pos = 2
            if j == n - 1 and getattr(up, "upsamplers", None) is not None:
                blocks[f"up_blocks.{i}.upsamplers.0"] = (f"output_blocks.{k}.{pos}", "upsampler")
            k += 1
    return blocks


def to_sgm(path, blocks):
    """diffusers U-Net module path -> SGM module path (no `model.diffusion_model.` prefix)."""
    if path in TOP_LEVEL:
        return TOP_LEVEL[path]
    parts = path.split(".")
    # containers are 3 (mid_block.resnets.0) or 4 (down_blocks.1.resnets.0) components deep
    for depth in (4, 3):
        prefix = ".".join(parts[:depth])
        if prefix in blocks:
            sgm, kind = blocks[prefix]
            rest = parts[depth:]
            if kind == "resnet":
                leaf = ".".join(rest)
                if leaf not in RESNET_LEAF:
                    break
                return f"{sgm}.{RESNET_LEAF[leaf]}"
            if kind == "downsampler":
                if rest != ["conv"]:
                    break
                return f"{sgm}.op"
            if kind == "upsampler":
                if rest != ["conv"]:
                    break
                return f"{sgm}.conv"
            return sgm + "." + ".".join(rest)  # attention: Transformer2DModel internals keep names
    raise ValueError(f"no SGM name for U-Net module {path!r}")


# --------------------------------------------------------------------------------------------
# text encoders
# --------------------------------------------------------------------------------------------

OPENCLIP_LEAF = {  # transformers CLIP encoder-layer Linear -> OpenCLIP resblock tensor prefix
    "self_attn.q_proj": "attn.in_proj#q",  # row third 0 of attn.in_proj_weight
    "self_attn.k_proj": "attn.in_proj#k",  # row third 1
    "self_attn.v_proj": "attn.in_proj#v",  # row third 2
    "self_attn.out_proj": "attn.out_proj",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
}


def openclip_name(path, prefix):
    parts = path.split(".")  # text_model.encoder.layers.N.<self_attn.x | mlp.fcK>
    assert parts[:3] == ["text_model", "encoder", "layers"], path
    return f"{prefix}transformer.resblocks.{parts[3]}.{OPENCLIP_LEAF['.'.join(parts[4:])]}"


def hf_clip_name(prefix):
    return lambda path: prefix + path


# --------------------------------------------------------------------------------------------
# module enumeration
# --------------------------------------------------------------------------------------------

# Module classes whose Linear/Conv2d children kohya sd-scripts' networks/lora.py wraps
# (class names are the same in diffusers, in sd-scripts' own U-Nets and in transformers).
KOHYA_LORA_TARGETS = {"Transformer2DModel": "unet-attn", "CLIPAttention": "te",
                      "CLIPSdpaAttention": "te", "CLIPMLP": "te"}
KOHYA_CONV_TARGETS = {"ResnetBlock2D": "unet-conv", "Downsample2D": "unet-conv",
                      "Upsample2D": "unet-conv"}


def linear_conv_modules(model, path_prefix=""):
    """[(path, kind, out, in, kh, kw, kohya_group)] for every Linear/Conv2d in `model`."""
    owner = {}  # module path -> nearest kohya target class group
    rows = []
    for name, mod in model.named_modules():
        parent = name.rsplit(".", 1)[0] if "." in name else ""
        group = owner.get(parent)
        cls = type(mod).__name__
        if cls in KOHYA_LORA_TARGETS:
            group = KOHYA_LORA_TARGETS[cls]
        elif cls in KOHYA_CONV_TARGETS:
            group = KOHYA_CONV_TARGETS[cls]
        owner[name] = group
        if isinstance(mod, torch.nn.Conv2d):
            o, i, kh, kw = mod.weight.shape
            rows.append((path_prefix + name, "conv", o, i, kh, kw, group))
        elif isinstance(mod, torch.nn.Linear):
            o, i = mod.weight.shape
            rows.append((path_prefix + name, "linear", o, i, 1, 1, group))
    return rows


def text_encoder_rows(model):
    # transformers 5 builds CLIPTextModel without the `text_model.` level (transformers 4 and every
    # checkpoint/kohya name have it); canonical paths always carry it.
    prefix = "" if hasattr(model, "text_model") else "text_model."
    rows = [r for r in linear_conv_modules(model, prefix)
            if r[0].startswith("text_model.encoder.layers.")]
    for r in rows:
        assert r[6] == "te", f"text-encoder Linear outside CLIPAttention/CLIPMLP: {r[0]}"
    return rows


# --------------------------------------------------------------------------------------------
# tables
# --------------------------------------------------------------------------------------------

def build(family):
    """Rows (8 columns + kohya group) sorted by canonical path, plus the diffusers U-Net."""
    with torch.device("meta"):
        if family == "sd15":
            unet = sd15_unet()
            encoders = [("text_encoder", "lora_te_", clip_text(768, 12, 3072, 12),
                         hf_clip_name("cond_stage_model.transformer."))]
        elif family == "sdxl":
            unet = sdxl_unet()
            encoders = [("text_encoder", "lora_te1_", clip_text(768, 12, 3072, 12),
                         hf_clip_name("conditioner.embedders.0.transformer.")),
                        ("text_encoder_2", "lora_te2_", clip_text(1280, 32, 5120, 20, True),
                         lambda p: openclip_name(p, "conditioner.embedders.1.model."))]
        else:
            raise ValueError(family)
    blocks = sgm_block_map(unet)
    rows = []
    for path, kind, o, i, kh, kw, group in linear_conv_modules(unet):
        sgm = to_sgm(path, blocks)
        # sd-scripts trains SD 1.x on a U-Net with diffusers module names, SDXL on one with SGM names
        kohya_path = sgm if family == "sdxl" else path
        rows.append((f"unet.{path}", "lora_unet_" + kohya_path.replace(".", "_"), kind, o, i, kh,
                     kw, f"model.diffusion_model.{sgm}", group))
    for component, kohya_prefix, model, ldm in encoders:
        for path, kind, o, i, kh, kw, group in text_encoder_rows(model):
            rows.append((f"{component}.{path}", kohya_prefix + path.replace(".", "_"), kind, o, i,
                         kh, kw, ldm(path), group))
    rows.sort(key=lambda r: r[0].encode())
    return rows, unet


def render(rows):
    return HEADER + "".join("\t".join(str(x) for x in r[:8]) + "\n" for r in rows)


def write(family, rows):
    path = os.path.join(ROOT, "formats", f"{family}.tsv")
    data = render(rows).encode("utf-8")
    with open(path, "wb") as f:
        f.write(data)
    return path


# --------------------------------------------------------------------------------------------
# checks that need nothing but the rows
# --------------------------------------------------------------------------------------------

def counts(rows):
    out = {}
    for r in rows:
        comp = r[0].split(".", 1)[0]
        out[comp] = out.get(comp, 0) + 1
    return out


def check_self(family, rows):
    for col in (0, 1, 7):
        vals = [r[col] for r in rows]
        dup = {v for v in vals if vals.count(v) > 1} if len(set(vals)) != len(vals) else set()
        assert not dup, f"{family}: duplicate {COLUMNS[col]}: {sorted(dup)[:5]}"
    for r in rows:
        assert all("\t" not in str(x) and "\n" not in str(x) for x in r[:8])
        assert r[2] in ("linear", "conv") and (r[2] == "conv" or (r[5], r[6]) == (1, 1))
    assert [r[0].encode() for r in rows] == sorted(r[0].encode() for r in rows)
    groups = {}
    for r in rows:
        key = (r[0].split(".", 1)[0], r[8] or "not targeted")
        groups[key] = groups.get(key, 0) + 1
    print(f"{family}: {len(rows)} rows {counts(rows)}; canonical paths, kohya names and ldm names "
          f"unique")
    print(f"  kohya lora.py targets: " + ", ".join(f"{c}/{g}={n}" for (c, g), n in sorted(groups.items())))
    untargeted = [r[0] for r in rows if r[8] is None]
    print(f"  not targeted by kohya: {', '.join(untargeted)}")


# --------------------------------------------------------------------------------------------
# --check: diffusers as an oracle, kohya fixtures
# --------------------------------------------------------------------------------------------

def check_ldm_unet(family, rows, unet):
    """A synthetic single-file U-Net checkpoint holding every ldm name (each weight tagged with
    its row number) goes through diffusers' own ldm->diffusers converter; every tagged weight
    must come out under our canonical path."""
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    blocks = sgm_block_map(unet)
    ckpt, want = {}, {}
    for n, r in enumerate(rows):
        if r[0].startswith("unet."):
            ckpt[r[7] + ".weight"] = torch.full((1,), float(n + 1))
            ckpt[r[7] + ".bias"] = torch.zeros(1)
            want[r[0][len("unet."):] + ".weight"] = n + 1
    for name, mod in unet.named_modules():  # norms: the converter wants them too
        if isinstance(mod, (torch.nn.GroupNorm, torch.nn.LayerNorm)):
            sgm = to_sgm(name, blocks)
            ckpt[f"model.diffusion_model.{sgm}.weight"] = torch.zeros(1)
            ckpt[f"model.diffusion_model.{sgm}.bias"] = torch.zeros(1)
    got = convert_ldm_unet_checkpoint(ckpt, dict(unet.config))
    bad = [k for k, v in want.items() if k not in got or got[k].item() != v]
    print(f"  diffusers convert_ldm_unet_checkpoint: {len(want) - len(bad)}/{len(want)} U-Net "
          f"ldm names land on our canonical path")
    assert not bad, bad[:10]


def check_ldm_text(family, rows):
    """Same for the text encoders: diffusers' CLIP prefix stripper and its OpenCLIP converter
    (which slices the fused in_proj_weight into q/k/v row thirds)."""
    from diffusers.loaders.single_file_utils import convert_ldm_clip_checkpoint, convert_open_clip_checkpoint

    for comp in ("text_encoder", "text_encoder_2"):
        part = [(n + 1, r) for n, r in enumerate(rows) if r[0].split(".", 1)[0] == comp]
        if not part:
            continue
        want = {r[0][len(comp) + 1:] + ".weight": (tag, r[3]) for tag, r in part}
        if not any("#" in r[7] for _, r in part):
            ckpt = {r[7] + ".weight": torch.full((1,), float(tag)) for tag, r in part}
            got = convert_ldm_clip_checkpoint(ckpt)
            how = "convert_ldm_clip_checkpoint"
        else:
            ckpt = {}
            hidden = None
            for tag, r in part:
                if "#" in r[7]:
                    base, which = r[7].split("#")
                    hidden = r[3]
                    t = ckpt.setdefault(base + "_weight", torch.zeros(3 * r[3], 1))
                    third = "qkv".index(which)
                    t[third * r[3]:(third + 1) * r[3]] = float(tag)
                else:
                    ckpt[r[7] + ".weight"] = torch.full((r[3], 1), float(tag))

            class Cfg:  # the converter only reads config.hidden_size
                config = type("C", (), {"hidden_size": hidden})()

            got = convert_open_clip_checkpoint(Cfg(), ckpt, prefix="conditioner.embedders.1.model.")
            how = "convert_open_clip_checkpoint"
        bad = []
        for key, (tag, out) in want.items():
            t = got.get(key)
            if t is None or t.shape[0] not in (1, out) or not bool((t == tag).all()):
                bad.append(key)
        print(f"  diffusers {how}: {len(want) - len(bad)}/{len(want)} {comp} ldm names land on "
              f"our canonical path")
        assert not bad, bad[:10]


def check_kohya_loader(family, rows, unet):
    """A synthetic kohya LoRA holding every kohya name (each tensor tagged with its row number)
    goes through diffusers' kohya loader (lora_state_dict, then its PEFT key conversion); every
    tagged tensor must come out under our canonical path."""
    from diffusers.loaders import StableDiffusionLoraLoaderMixin, StableDiffusionXLLoraLoaderMixin
    from diffusers.utils import (convert_state_dict_to_diffusers, convert_state_dict_to_peft,
                                 convert_unet_state_dict_to_peft)

    mixin = StableDiffusionXLLoraLoaderMixin if family == "sdxl" else StableDiffusionLoraLoaderMixin
    sd = {}
    for n, r in enumerate(rows):
        sd[r[1] + ".lora_down.weight"] = torch.full((1, 1), float(n + 1))
        sd[r[1] + ".lora_up.weight"] = torch.full((1, 1), float(n + 1))
        sd[r[1] + ".alpha"] = torch.tensor(1.0)
    state = mixin.lora_state_dict(sd, unet_config=unet.config)[0]
    got = {}
    for comp in ("unet", "text_encoder", "text_encoder_2"):
        part = {k[len(comp) + 1:]: v for k, v in state.items() if k.startswith(comp + ".")}
        if not part:
            continue
        if comp == "unet":
            part = convert_unet_state_dict_to_peft(part)
        else:
            part = convert_state_dict_to_peft(convert_state_dict_to_diffusers(part))
        for k, v in part.items():
            for suffix in (".lora_A.weight", ".lora_B.weight"):
                if k.endswith(suffix):
                    got.setdefault(f"{comp}.{k[:-len(suffix)]}", set()).add(int(v.item()))
    bad = [r[0] for n, r in enumerate(rows) if got.get(r[0]) != {n + 1}]
    extra = sorted(set(got) - {r[0] for r in rows})
    print(f"  diffusers kohya loader: {len(rows) - len(bad)}/{len(rows)} kohya names land on our "
          f"canonical path ({len(extra)} unexpected)")
    assert not bad and not extra, (bad[:10], extra[:10])


def safetensors_header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    return header.pop("__metadata__", {}) or {}, header


def check_kohya_file(path, tables):
    meta, header = safetensors_header(path)
    names = {}
    for key, info in header.items():
        mod, _, rest = key.partition(".")
        names.setdefault(mod, {})[rest] = info["shape"]
    sdxl = (meta.get("ss_base_model_version", "").startswith("sdxl")
            or any(m.startswith(("lora_te1_", "lora_te2_")) or "_input_blocks_" in m for m in names))
    family = "sdxl" if sdxl else "sd15"
    table = tables[family]
    problems = []
    for mod, tensors in sorted(names.items()):
        row = table.get(mod)
        if row is None:
            problems.append(f"{mod}: not in {family}.tsv")
            continue
        kind, o, i, kh, kw = row[2], row[3], row[4], row[5], row[6]
        down, up = tensors.get("lora_down.weight"), tensors.get("lora_up.weight")
        if down is None or up is None:
            problems.append(f"{mod}: no lora_down/lora_up pair ({sorted(tensors)})")
            continue
        r = down[0]
        want_down = [r, i] if kind == "linear" else [r, i, kh, kw]
        want_up = [o, r] if kind == "linear" else [o, r, 1, 1]
        if down != want_down or up != want_up:
            problems.append(f"{mod}: down {down} up {up}, table wants {want_down} / {want_up}")
    targeted = {name for name, row in table.items() if row[8] is not None}
    cover = ("= exactly the rows kohya targets" if set(names) == targeted
             else f"{len(set(names) & targeted)} of {len(targeted)} kohya-targeted rows")
    print(f"  {os.path.relpath(path, ROOT) if path.startswith(ROOT) else path}: {len(names)} modules "
          f"vs {family}.tsv, {len(names) - len(problems)} found with matching shapes ({cover})")
    for p in problems[:10]:
        print("    " + p)
    return not problems


def check_fixtures(paths, all_rows):
    tables = {fam: {r[1]: r for r in rows} for fam, rows in all_rows.items()}
    files = []
    for p in paths:
        if os.path.isdir(p):
            files += sorted(glob.glob(os.path.join(p, "*.safetensors")))
        elif os.path.isfile(p):
            files.append(p)
    kohya = []
    for f in files:
        _, header = safetensors_header(f)
        if any(k.startswith(("lora_unet_", "lora_te")) for k in header):
            kohya.append(f)
    ok = all([check_kohya_file(f, tables) for f in kohya])
    assert ok, "kohya fixture mismatch"
    return len(kohya)


def main(argv):
    check = "--check" in argv
    fixtures = []
    if "--fixtures" in argv:
        fixtures = [a for a in argv[argv.index("--fixtures") + 1:] if not a.startswith("--")]
    if not fixtures:
        fixtures = [os.path.join(ROOT, "fixtures"), os.path.join(ROOT, "fixtures", "kohya")]
    all_rows = {}
    for family in ("sd15", "sdxl"):
        rows, unet = build(family)
        check_self(family, rows)
        print(f"  wrote {write(family, rows)}")
        all_rows[family] = rows
        if check:
            check_ldm_unet(family, rows, unet)
            check_ldm_text(family, rows)
            check_kohya_loader(family, rows, unet)
    if check:
        n = check_fixtures(fixtures, all_rows)
        print(f"kohya fixtures: {n} files checked, all modules found with matching shapes")


if __name__ == "__main__":
    main(sys.argv[1:])
