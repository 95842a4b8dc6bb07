//! Digests and adapter references: parsing and validation, nothing else.
//!
//! A [`Digest`] is `sha256:` followed by 64 lowercase hex digits; it is the only thing ever
//! turned into a blob path, so a hostile `index.json` or manifest cannot name `../../etc`.
//! A [`Reference`] is `namespace/name:tag` or `namespace/name@sha256:<hex>`, following the OCI
//! distribution reference grammar, narrowed: path components are `[a-z0-9]+([._-][a-z0-9]+)*`,
//! at most one `/` (one namespace level), a name of at most 255 characters, and tags
//! `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.

use super::error::{RegistryError, Result};
use std::fmt;

/// The longest repository name OCI distribution accepts.
pub const MAX_NAME_LEN: usize = 255;
/// The longest tag OCI distribution accepts.
pub const MAX_TAG_LEN: usize = 128;

/// A validated `sha256:<64 lowercase hex>` digest.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest(String);

impl Digest {
    /// Parse and validate; `None` when `s` is not exactly `sha256:` + 64 lowercase hex digits.
    pub fn parse(s: &str) -> Option<Digest> {
        let hex = s.strip_prefix("sha256:")?;
        if hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Some(Digest(s.to_string()))
        } else {
            None
        }
    }
    pub fn from_sha256(bytes: &[u8]) -> Digest {
        Digest(format!("sha256:{}", hex::encode(bytes)))
    }
    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Digest {
        use sha2::Digest as _;
        Digest::from_sha256(&sha2::Sha256::digest(data))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The 64 hex digits (the blob's file name).
    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }
    /// The first 12 hex digits, for tables.
    pub fn short(&self) -> &str {
        &self.hex()[..12]
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `name:tag` or `name@digest`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Tag(String),
    Digest(Digest),
}

/// A validated adapter reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    pub name: String,
    pub target: Target,
}

impl Reference {
    /// Parse `namespace/name:tag` or `namespace/name@sha256:<hex>`. Without either, the tag is
    /// `default_tag` when given, else the reference is refused.
    pub fn parse_with_default(s: &str, default_tag: Option<&str>) -> Result<Reference> {
        if let Some((name, digest)) = s.split_once('@') {
            validate_name(s, name)?;
            let digest = Digest::parse(digest).ok_or_else(|| {
                RegistryError::bad_ref(
                    s,
                    "the digest must be sha256: followed by 64 lowercase hex digits",
                )
            })?;
            return Ok(Reference {
                name: name.to_string(),
                target: Target::Digest(digest),
            });
        }
        // a tag cannot contain '/', and a name cannot contain ':', so the last ':' splits them
        let (name, tag) = match s.rsplit_once(':') {
            Some((n, t)) => (n, t),
            None => match default_tag {
                Some(t) => (s, t),
                None => {
                    return Err(RegistryError::bad_ref(
                        s,
                        "expected name:tag or name@sha256:<digest>",
                    ))
                }
            },
        };
        validate_name(s, name)?;
        validate_tag(s, tag)?;
        Ok(Reference {
            name: name.to_string(),
            target: Target::Tag(tag.to_string()),
        })
    }

    /// Parse a reference that must carry a tag or a digest.
    pub fn parse(s: &str) -> Result<Reference> {
        Reference::parse_with_default(s, None)
    }

    /// The tag, for references that have one.
    pub fn tag(&self) -> Option<&str> {
        match &self.target {
            Target::Tag(t) => Some(t),
            Target::Digest(_) => None,
        }
    }

    /// The `org.opencontainers.image.ref.name` loratool writes into `index.json` for a tag:
    /// the full `name:tag`, which `skopeo inspect oci:<store>:<name:tag>` resolves.
    pub fn ref_name(&self) -> Option<String> {
        self.tag().map(|t| format!("{}:{t}", self.name))
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.target {
            Target::Tag(t) => write!(f, "{}:{t}", self.name),
            Target::Digest(d) => write!(f, "{}@{d}", self.name),
        }
    }
}

fn validate_name(whole: &str, name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(RegistryError::bad_ref(whole, "the name is empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(RegistryError::bad_ref(
            whole,
            format!(
                "the name is {} characters long; at most {MAX_NAME_LEN} are allowed",
                name.len()
            ),
        ));
    }
    let parts: Vec<&str> = name.split('/').collect();
    if parts.len() > 2 {
        return Err(RegistryError::bad_ref(
            whole,
            "at most one namespace level is allowed (namespace/name)",
        ));
    }
    for part in parts {
        if !is_component(part) {
            return Err(RegistryError::bad_ref(
                whole,
                format!(
                    "'{part}' is not a valid name component: use lowercase letters and digits, separated by single '.', '_' or '-' (no '..', no leading or trailing separator)"
                ),
            ));
        }
    }
    Ok(())
}

/// `[a-z0-9]+([._-][a-z0-9]+)*`
fn is_component(part: &str) -> bool {
    let bytes = part.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let sep = |b: u8| matches!(b, b'.' | b'_' | b'-');
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    bytes.iter().all(|&b| alnum(b) || sep(b)) && !bytes.windows(2).any(|w| sep(w[0]) && sep(w[1]))
}

fn validate_tag(whole: &str, tag: &str) -> Result<()> {
    let ok_first = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let ok_rest = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-');
    let bytes = tag.as_bytes();
    if bytes.is_empty() {
        return Err(RegistryError::bad_ref(whole, "the tag is empty"));
    }
    if bytes.len() > MAX_TAG_LEN {
        return Err(RegistryError::bad_ref(
            whole,
            format!(
                "the tag is {} characters long; at most {MAX_TAG_LEN} are allowed",
                bytes.len()
            ),
        ));
    }
    if !ok_first(bytes[0]) || !bytes[1..].iter().all(|&b| ok_rest(b)) {
        return Err(RegistryError::bad_ref(
            whole,
            "a tag is letters, digits, '_', '.' and '-', not starting with '.' or '-'",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_namespaced_tags_and_digests() {
        let r = Reference::parse("acme/style-v2.1:v1").unwrap();
        assert_eq!(r.name, "acme/style-v2.1");
        assert_eq!(r.tag(), Some("v1"));
        assert_eq!(r.ref_name().as_deref(), Some("acme/style-v2.1:v1"));
        let d = format!("x@sha256:{}", "a".repeat(64));
        let r = Reference::parse(&d).unwrap();
        assert_eq!(r.to_string(), d);
    }

    #[test]
    fn refuses_hostile_names() {
        for bad in [
            "../x:1",
            "a/b/c:1",
            "UPPER:1",
            "x:",
            ":v1",
            "a//b:1",
            "a..b:1",
            "-a:1",
            "a-:1",
            "x:.v",
            "x:-v",
            "a/../b:1",
            "/abs:1",
            "x@sha256:ABC",
            "x",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad} accepted");
        }
        assert!(Reference::parse(&format!("{}:1", "a".repeat(300))).is_err());
        assert!(Reference::parse(&format!("a:{}", "t".repeat(129))).is_err());
        assert!(Reference::parse(&format!("a:{}", "t".repeat(128))).is_ok());
    }

    #[test]
    fn digests_must_be_lowercase_sha256() {
        assert!(Digest::parse(&format!("sha256:{}", "0".repeat(64))).is_some());
        assert!(Digest::parse(&format!("sha256:{}", "0".repeat(63))).is_none());
        assert!(Digest::parse(&format!("sha512:{}", "0".repeat(64))).is_none());
        assert!(Digest::parse(&format!("sha256:{}/..", "0".repeat(61))).is_none());
    }
}
