//! `model.safetensors.index.json` of a sharded model, next to two real shards: a tensor store or
//! an error naming the index; every opened shard is a file of the model directory (no path in
//! the index leads outside it) and every tensor the store lists can be viewed.
#![no_main]
use loratool::io::TensorStore;
use loratool_fuzz::{assert_names_file, run};

/// A small F32 safetensors shard holding `names`, each of shape [2].
fn shard(names: &[&str]) -> Vec<u8> {
    let mut header = String::from("{");
    for (i, n) in names.iter().enumerate() {
        if i > 0 {
            header.push(',');
        }
        header.push_str(&format!(
            "\"{n}\":{{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[{},{}]}}",
            i * 8,
            i * 8 + 8
        ));
    }
    header.push('}');
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend(std::iter::repeat_n(0u8, names.len() * 8));
    bytes
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| run(data, |data, scratch| {
    scratch.write(
        "model/model-00001-of-00002.safetensors",
        &shard(&["a.weight", "b.weight"]),
    );
    scratch.write(
        "model/model-00002-of-00002.safetensors",
        &shard(&["c.weight"]),
    );
    let index = scratch.write("model/model.safetensors.index.json", data);
    let dir = scratch.path("model");
    let dir = dir.as_path();
    match TensorStore::open_index(&index) {
        Ok(store) => {
            for f in store.files() {
                assert_eq!(
                    f.path().parent(),
                    Some(dir),
                    "opened {}",
                    f.path().display()
                );
            }
            let names: Vec<String> = store.names().map(str::to_string).collect();
            for n in names {
                store.tensor(&n).expect("a listed tensor can be viewed");
            }
        }
        Err(e) => assert_names_file(&e, dir),
    }
}));
