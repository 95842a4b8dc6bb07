//! PEFT adapter directory reader: `adapter_config.json` + `adapter_model.safetensors`, framed in
//! one input as `[u16 LE config length][config][weights]`. An `Adapter` or an error naming a
//! file of the adapter; what reads writes as PEFT and reads back bit-identical (rsLoRA and
//! patterns folded into each module's alpha).
#![no_main]
use loratool::adapter::{peft, ReadOptions};
use loratool_fuzz::{assert_same_adapter, run, Tolerance};

libfuzzer_sys::fuzz_target!(|data: &[u8]| run(data, |data, scratch| {
    if data.len() < 2 {
        return;
    }
    let n = (u16::from_le_bytes([data[0], data[1]]) as usize).min(data.len() - 2);
    let (config, weights) = data[2..].split_at(n);
    scratch.write("in/adapter_config.json", config);
    scratch.write("in/adapter_model.safetensors", weights);
    let dir = scratch.path("in");
    let adapter = match peft::read(&dir, ReadOptions {
        skip_unknown: true,
        ..ReadOptions::default()
    }) {
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
}));
