//! Digests, references, repository names, tags and upload ids (berth-oci) on arbitrary
//! text, as they arrive in paths, query strings and manifests: parsing never panics,
//! whatever parses is what its grammar allows and prints back as it was written, and
//! the kinds never overlap (a tag is never a digest).

#![no_main]

use berth_oci::names::{validate_name, validate_tag};
use berth_oci::{Algorithm, Digest, OciError, Reference, RepoName, UploadId};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    match s.parse::<Digest>() {
        Ok(d) => {
            assert_eq!(d.as_str(), s);
            assert_eq!(d.to_string(), s);
            let (algorithm, hex) = s.split_once(':').unwrap();
            assert_eq!(d.algorithm().name(), algorithm);
            assert_eq!(d.hex(), hex);
            assert_eq!(hex.len(), d.algorithm().hex_len());
            assert!(hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
            assert_eq!(Reference::parse(s), Ok(Reference::Digest(d)));
        }
        Err(e) => assert!(
            matches!(
                e,
                OciError::DigestInvalid(_) | OciError::DigestUnsupported(_)
            ),
            "{e:?}"
        ),
    }
    match Algorithm::parse(s) {
        Ok(a) => assert_eq!(a.name(), s),
        Err(e) => assert!(
            matches!(
                e,
                OciError::DigestInvalid(_) | OciError::DigestUnsupported(_)
            ),
            "{e:?}"
        ),
    }
    match Reference::parse(s) {
        Ok(Reference::Tag(t)) => {
            assert_eq!(t, s);
            assert!(validate_tag(s).is_ok() && !s.contains(':'));
            assert!((1..=128).contains(&s.len()));
        }
        Ok(Reference::Digest(d)) => assert_eq!(d.as_str(), s),
        Err(e) => assert!(
            matches!(
                e,
                OciError::TagInvalid(_)
                    | OciError::DigestInvalid(_)
                    | OciError::DigestUnsupported(_)
            ),
            "{e:?}"
        ),
    }
    match RepoName::parse(s) {
        Ok(name) => {
            assert_eq!(name.as_str(), s);
            assert!(validate_name(s).is_ok());
            assert!((1..=255).contains(&s.len()));
            // Path-safe: no segment can climb out, nothing needs escaping.
            assert!(s.split('/').all(|c| !c.is_empty() && c != "." && c != ".."));
            assert!(s
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/".contains(&b)));
            if let Some(ns) = name.namespace() {
                assert!(RepoName::parse(ns).is_ok());
            }
        }
        Err(e) => assert!(matches!(e, OciError::NameInvalid(_)), "{e:?}"),
    }
    match UploadId::parse(s) {
        Ok(id) => {
            assert_eq!(id.as_str(), s);
            assert!((1..=128).contains(&s.len()));
            assert!(s
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)));
        }
        Err(e) => assert!(matches!(e, OciError::UploadUnknown(_)), "{e:?}"),
    }
});
