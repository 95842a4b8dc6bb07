//! kohya LoRA reader, a whole file in (plain LoRA/LoCon seeds): see `readers::kohya_file`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| loratool_fuzz::run(
    data,
    loratool_fuzz::readers::kohya_file
));
