//! What remote servers and users hand the remote clients as text: `WWW-Authenticate` challenges,
//! the Hub's tree listing entries, and `hf://` / `oci://` references. (OCI manifests and indexes
//! are the registry's own `Manifest`/`Index` parsers: the `registry_json` target.) Nothing
//! panics; a challenge's parameters are found by name; a reference that parses prints as a
//! reference that parses to the same text.
#![no_main]
use loratool::remote::hub::TreeEntry;
use loratool::remote::oci::auth::parse_challenge;
use loratool::remote::RemoteRef;
use loratool_fuzz::run;

libfuzzer_sys::fuzz_target!(|data: &[u8]| run(data, |data, _| {
    let _ = serde_json::from_slice::<Vec<TreeEntry>>(data);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(c) = parse_challenge(text) {
        for (k, v) in &c.params {
            assert!(
                c.param(k).is_some(),
                "parameter {k:?} (= {v:?}) not found by name"
            );
        }
    }
    let body = text
        .trim_start_matches("hf://")
        .trim_start_matches("oci://");
    for s in [format!("hf://{body}"), format!("oci://{body}")] {
        if let Some(Ok(r)) = RemoteRef::parse(&s) {
            let shown = r.to_string();
            match RemoteRef::parse(&shown) {
                Some(Ok(again)) => {
                    assert_eq!(
                        again.to_string(),
                        shown,
                        "{s:?} prints differently after a re-parse"
                    )
                }
                Some(Err(e)) => panic!("{s:?} parsed, but its text {shown:?} does not: {e}"),
                None => panic!("{s:?} parsed, but its text {shown:?} is no reference"),
            }
        }
    }
}));
