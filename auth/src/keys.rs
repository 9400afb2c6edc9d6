//! The Ed25519 key that signs registry tokens: generated on first start and kept in the
//! data directory (mode 0600), so tokens survive restarts and are shared by replicas
//! that share the data directory's key file.

use std::io::Write;
use std::path::Path;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine;
use jsonwebtoken::{DecodingKey, EncodingKey};

use crate::error::AuthError;

pub struct SigningKeys {
    pub encoding: EncodingKey,
    pub decoding: DecodingKey,
}

impl SigningKeys {
    pub fn load_or_create(path: &Path) -> Result<SigningKeys, AuthError> {
        let pkcs8 = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
                    .map_err(|e| AuthError::Key(format!("generating: {e}")))?;
                write_private(path, doc.as_ref())?;
                doc.as_ref().to_vec()
            }
            Err(e) => return Err(e.into()),
        };
        SigningKeys::from_pkcs8(&pkcs8)
    }

    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<SigningKeys, AuthError> {
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8)
            .map_err(|e| AuthError::Key(format!("reading: {e}")))?;
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
        Ok(SigningKeys {
            encoding: EncodingKey::from_ed_der(pkcs8),
            decoding: DecodingKey::from_ed_components(&x)
                .map_err(|e| AuthError::Key(e.to_string()))?,
        })
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), AuthError> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}
