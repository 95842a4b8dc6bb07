//! Target bodies shared by more than one target: the kohya and PEFT readers are fuzzed from
//! plain-LoRA seeds (`kohya`, `peft`) and from LyCORIS seeds (`lycoris_kohya`, `lycoris_peft`:
//! hada_/lokr_/lora_mid/dora_scale keys, PEFT LOHA/LOKR configs) with their own corpora and
//! dictionaries, so neither corpus crowds out the other.

use crate::compare::delta_probe_diff;
use crate::{assert_names_file, assert_same_adapter, Scratch, Tolerance};
use loratool::adapter::codec::{self, ReadContext, WriteContext};
use loratool::adapter::{kohya, peft, Format, ReadOptions};

const LENIENT: ReadOptions = ReadOptions {
    skip_unknown: true,
    layout_only: false,
};

/// A kohya file in: an `Adapter` or an error naming the file; what reads writes as kohya and
/// reads back bit-identical (a LyCORIS module comes back as the LoRA it was converted to).
pub fn kohya_file(data: &[u8], scratch: &Scratch) {
    let path = scratch.write("in.safetensors", data);
    if let Err(e) = codec::detect_format(&path) {
        assert_names_file(&e, &path);
    }
    let adapter = match kohya::read(&path, LENIENT) {
        Ok(a) => a,
        Err(e) => return assert_names_file(&e, &path),
    };
    let out = scratch.path("out/lora.safetensors");
    if let Err(e) = kohya::write(&adapter, &out, &|_| {}) {
        assert!(
            scratch.list("out").is_empty(),
            "a failed write left {:?}",
            scratch.list("out")
        );
        panic!("an adapter the kohya reader accepted cannot be written as kohya: {e}");
    }
    let back = kohya::read(&out, ReadOptions::default()).expect("the written file reads");
    assert_same_adapter(&adapter, &back, Tolerance::Exact);
}

/// A PEFT directory framed in one input as `[u16 LE config length][config][weights]`: an
/// `Adapter` or an error naming a file of the adapter; what reads writes as PEFT and reads back
/// bit-identical (rsLoRA and patterns folded into each module's alpha).
pub fn peft_dir(data: &[u8], scratch: &Scratch) {
    if data.len() < 2 {
        return;
    }
    let n = (u16::from_le_bytes([data[0], data[1]]) as usize).min(data.len() - 2);
    let (config, weights) = data[2..].split_at(n);
    scratch.write("in/adapter_config.json", config);
    scratch.write("in/adapter_model.safetensors", weights);
    let dir = scratch.path("in");
    let adapter = match peft::read(&dir, LENIENT) {
        Ok(a) => a,
        Err(e) => {
            let text = e.to_string();
            assert!(
                text.contains(&dir.display().to_string()),
                "the error names no file: {text}"
            );
            return;
        }
    };
    let out = scratch.path("out");
    if let Err(e) = peft::write(&adapter, &out, &|_| {}) {
        assert!(
            scratch.list("out").is_empty(),
            "a failed write left {:?}",
            scratch.list("out")
        );
        panic!("an adapter the PEFT reader accepted cannot be written as PEFT: {e}");
    }
    let back = peft::read(&out, ReadOptions::default()).expect("the written adapter reads");
    assert_same_adapter(&adapter, &back, Tolerance::Exact);
    assert_eq!(back.meta.fan_in_fan_out, adapter.meta.fan_in_fan_out);
}

/// A Flux.1 / SD3 adapter file in any layout loratool reads (kohya with fused qkv/linear1 or
/// sd-scripts' split_qkv, ComfyUI/BFL, OneTrainer, XLabs, `lycoris_`, diffusers transformer
/// keys): detection and reading give an `Adapter` or an error naming the file. What reads is
/// written in each layout loratool writes for these models (kohya, comfy, diffusers); a write
/// either succeeds and reads back with the same modules and the same ΔW per module (fusing and
/// splitting q/k/v are exact: `ΔW·v` for a pseudo-random `v` within 1e-5 relative), or refuses
/// and leaves nothing.
pub fn dit_file(data: &[u8], scratch: &Scratch) {
    let path = scratch.write("in.safetensors", data);
    let format = match codec::detect_format(&path) {
        Ok(f) => f,
        Err(e) => return assert_names_file(&e, &path),
    };
    let cx = ReadContext {
        opts: LENIENT,
        base: None,
    };
    let adapter = match codec::read_adapter(&path, Some(format), &cx) {
        Ok(a) => a,
        Err(e) => return assert_names_file(&e, &path),
    };
    if adapter.layers.is_empty() {
        return;
    }
    for (layout, name) in [
        (Format::Kohya, "out/kohya.safetensors"),
        (Format::Comfy, "out/comfy.safetensors"),
        (Format::Diffusers, "out/diffusers"),
    ] {
        let out = scratch.path(name);
        if codec::write_adapter(&adapter, layout, &out, &WriteContext::default()).is_err() {
            assert!(
                scratch.list("out").is_empty(),
                "a failed {layout} write left {:?}",
                scratch.list("out")
            );
            continue;
        }
        let back = codec::read_adapter(&out, Some(layout), &ReadContext::default())
            .unwrap_or_else(|e| panic!("the {layout} file loratool wrote does not read: {e}"));
        let (ka, kb): (Vec<_>, Vec<_>) = (
            adapter.layers.keys().collect(),
            back.layers.keys().collect(),
        );
        assert_eq!(ka, kb, "{layout}: the modules changed");
        for (m, la) in &adapter.layers {
            let lb = &back.layers[m];
            let width = |l: &loratool::adapter::LoraLayer| {
                (
                    l.up.shape()[0],
                    l.down.shape()[1..].iter().product::<usize>(),
                )
            };
            assert_eq!(width(la), width(lb), "{layout} {m}: out × in features");
            let d = delta_probe_diff(lb, la);
            assert!(
                d <= 1e-5 || !d.is_finite(),
                "{layout} {m}: ΔW·v differs by {d:e}"
            );
        }
        std::fs::remove_dir_all(scratch.path("out")).ok();
    }
}
