//! PEFT adapter directory reader (LORA configs): see `readers::peft_dir`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| loratool_fuzz::run(
    data,
    loratool_fuzz::readers::peft_dir
));
