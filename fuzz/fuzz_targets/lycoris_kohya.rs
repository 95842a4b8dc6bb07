//! The kohya reader on LyCORIS files (hada_/lokr_/lora_mid/dora_scale keys, converted to LoRA
//! on read): see `readers::kohya_file`.
//! The allocation bound is quadratic in the input (`alloc::bound_quadratic`): see FUZZING.md.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| loratool_fuzz::run_quadratic(
    data,
    loratool_fuzz::readers::kohya_file
));
