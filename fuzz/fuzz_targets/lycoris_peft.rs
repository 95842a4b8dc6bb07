//! PEFT LOHA/LOKR adapter directories (converted to LoRA on read): see `readers::peft_dir`.
//! The allocation bound is quadratic in the input (`alloc::bound_quadratic`): see FUZZING.md.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| loratool_fuzz::run_quadratic(
    data,
    loratool_fuzz::readers::peft_dir
));
