//! Filter directives (`Builder::filter`, `RUST_LOG`) against the `env_filter` crate:
//! a clear error or the same answers on sample targets, never a panic.
//! `cargo +nightly fuzz run filter_parse`
#![no_main]

fn reference(spec: &str) -> Option<quelog::fuzzing::ReferenceFilter> {
    let mut builder = env_filter::Builder::new();
    builder.try_parse(spec).ok()?;
    let filter = builder.build();
    Some(Box::new(move |level, target| {
        filter.enabled(&log::Metadata::builder().level(level).target(target).build())
    }))
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    quelog::fuzzing::filter_against_reference(data, &reference);
});
