//! The registry's JSON documents: `index.json`, image manifests, loratool's config blob. Any
//! bytes parse or give an error naming the document; what parses has only valid digests (and
//! plain file names as layer titles), and serialising it is a fixed point (parse → write →
//! parse → write gives the same bytes).
#![no_main]
use loratool::registry::manifest::{is_plain_file_name, Index, Manifest, ModelConfig};
use loratool::registry::Digest;
use loratool_fuzz::{assert_names_file, run};
use std::path::Path;

fn fixed_point<T: serde::Serialize>(first: &T, parse: impl Fn(&[u8]) -> T) {
    let a = serde_json::to_vec_pretty(first).expect("serialise");
    let b = serde_json::to_vec_pretty(&parse(&a)).expect("serialise");
    assert!(a == b, "serialisation is not a fixed point");
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| run(data, |data, _| {
    let path = Path::new("/fuzz/store/index.json");
    match Index::parse(path, data) {
        Ok(index) => {
            for d in &index.manifests {
                assert!(Digest::parse(&d.digest).is_some(), "bad digest accepted");
            }
            fixed_point(&index, |b| {
                Index::parse(path, b).expect("written index parses")
            });
        }
        Err(e) => assert_names_file(&e, path),
    }
    match Manifest::parse(path, data) {
        Ok(m) => {
            assert!(Digest::parse(&m.config.digest).is_some());
            for (title, _, _) in m.files() {
                assert!(is_plain_file_name(&title), "title {title:?} accepted");
            }
            assert_eq!(m.files().len(), m.layers.len(), "a layer was dropped");
            fixed_point(&m, |b| {
                Manifest::parse(path, b).expect("written manifest parses")
            });
        }
        Err(e) => assert_names_file(&e, path),
    }
    match ModelConfig::parse(path, data) {
        Ok(c) => fixed_point(&c, |b| {
            ModelConfig::parse(path, b).expect("written config parses")
        }),
        Err(e) => assert_names_file(&e, path),
    }
}));
