//! Flux.1 / SD3 adapters in every layout loratool reads: see `readers::dit_file`.
//! The allocation bound is quadratic in the input (`alloc::bound_quadratic`: LoHa/LoKr modules
//! in `lycoris_` files convert to LoRA on read): see FUZZING.md.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| loratool_fuzz::run_quadratic(
    data,
    loratool_fuzz::readers::dit_file
));
