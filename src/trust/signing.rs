//! Signing reports: Ed25519 JWS in compact serialization (RFC 7515, RFC 8037), as the MRO
//! delivery contract fixes it, with keys kept in a directory that allows rotation.
//!
//! Ed25519 comes from `ring`, which rustls already builds for TLS: no second crypto stack. A JWS
//! is `base64url(header) . base64url(payload) . base64url(signature)` without padding, the
//! protected header `{"alg":"EdDSA","kid":"<kid>","typ":"JOSE"}`. The key id is the RFC 7638 JWK
//! thumbprint of the public key, so anyone holding the JWK can recompute it.
//!
//! The keys directory holds one PKCS#8 file per private key, `<kid>.pk8` (mode 0600), and a file
//! `active` naming the key that signs. Old keys stay in the directory so that
//! [`KeyStore::public_set`] still lists them and old reports still verify. A private key file
//! that the group or others may access is refused, naming the file. Nothing here logs or
//! displays key material: [`SigningKey`]'s `Debug` shows only the kid.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{self, Ed25519KeyPair, KeyPair};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The only JWS algorithm accepted.
pub const ALG: &str = "EdDSA";
/// The file in a keys directory that names the active key.
pub const ACTIVE_FILE: &str = "active";
/// Extension of private key files.
pub const KEY_EXT: &str = "pk8";

/// Why signing keys could not be made, loaded or stored. Names files, never key bytes.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path}: private key file is accessible to group or others (mode {mode:04o}); run chmod 600 on it"
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error(
        "{path}: keys directory is accessible to group or others (mode {mode:04o}); run chmod 700 on it"
    )]
    DirPermissions { path: PathBuf, mode: u32 },
    #[error("{0}: not a regular file")]
    NotAFile(PathBuf),
    #[error("{0}: not an Ed25519 PKCS#8 private key")]
    NotAKey(PathBuf),
    #[error("{path}: holds the key {actual}, not the key its name says")]
    KidMismatch { path: PathBuf, actual: String },
    #[error("{0}: no active key (run `custodian keys generate`)")]
    NoActiveKey(PathBuf),
    #[error("{path}: `{value}` is not a key id")]
    BadKid { path: PathBuf, value: String },
    #[error("the system random number generator failed")]
    Random,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A public key as a JWK (RFC 7517, RFC 8037).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    pub kty: String,
    pub crv: String,
    /// base64url of the 32-byte public key.
    pub x: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    #[serde(default, rename = "use", skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
}

impl Jwk {
    /// The RFC 7638 thumbprint of an Ed25519 public key: what this crate uses as `kid`.
    pub fn thumbprint(&self) -> String {
        thumbprint(&self.x)
    }
}

/// A JWK set (RFC 7517 §5).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct JwkSet {
    pub keys: Vec<Jwk>,
}

impl JwkSet {
    /// Reads a JWK set, or a single JWK taken as a set of one.
    pub fn parse(text: &str) -> Result<JwkSet, String> {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        if v.get("keys").is_some() {
            serde_json::from_value(v).map_err(|e| format!("not a JWK set: {e}"))
        } else {
            let k: Jwk = serde_json::from_value(v).map_err(|e| format!("not a JWK: {e}"))?;
            Ok(JwkSet { keys: vec![k] })
        }
    }
}

/// RFC 7638 thumbprint of an Ed25519 JWK with public key `x` (base64url): base64url of the
/// SHA-256 of `{"crv":"Ed25519","kty":"OKP","x":"..."}`.
pub fn thumbprint(x: &str) -> String {
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

/// Whether a text has the shape of a kid this crate makes (43 base64url characters).
pub fn is_kid(s: &str) -> bool {
    s.len() == 43
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// PKCS#8 bytes of a private key. `Debug` never shows them.
pub struct Pkcs8(Vec<u8>);

impl Pkcs8 {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Pkcs8 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pkcs8(..)")
    }
}

/// What signs a report: the compact JWS of `payload` and the key id that signed it. The
/// daemon uses the active [`SigningKey`]; tests may use a fake.
pub trait Signer: Send + Sync {
    fn sign(&self, payload: &[u8]) -> Result<(String, String), String>;
}

/// An Ed25519 private key and its kid.
pub struct SigningKey {
    kid: String,
    pair: Ed25519KeyPair,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl Signer for SigningKey {
    fn sign(&self, payload: &[u8]) -> Result<(String, String), String> {
        Ok((SigningKey::sign(self, payload), self.kid().to_string()))
    }
}

impl SigningKey {
    /// A new random key and its PKCS#8 (v2) encoding.
    pub fn generate() -> Result<(SigningKey, Pkcs8), KeyError> {
        let rng = ring::rand::SystemRandom::new();
        let doc = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| KeyError::Random)?;
        let bytes = doc.as_ref().to_vec();
        let key = SigningKey::from_pkcs8(&bytes).ok_or(KeyError::Random)?;
        Ok((key, Pkcs8(bytes)))
    }

    /// A key from PKCS#8 v1 or v2 (`openssl genpkey -algorithm ed25519` writes v1); `None` when
    /// the bytes are not an Ed25519 private key.
    pub fn from_pkcs8(bytes: &[u8]) -> Option<SigningKey> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(bytes).ok()?;
        let kid = thumbprint(&URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()));
        Some(SigningKey { kid, pair })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWK with `kid`, `alg` and `use`.
    pub fn public_jwk(&self) -> Jwk {
        Jwk {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            x: URL_SAFE_NO_PAD.encode(self.pair.public_key().as_ref()),
            kid: Some(self.kid.clone()),
            alg: Some(ALG.into()),
            use_: Some("sig".into()),
        }
    }

    /// Signs `payload` as a compact JWS.
    pub fn sign(&self, payload: &[u8]) -> String {
        let header = serde_json::json!({"alg": ALG, "kid": self.kid, "typ": "JOSE"});
        let mut out = URL_SAFE_NO_PAD.encode(header.to_string().as_bytes());
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(payload, &mut out);
        let sig = self.pair.sign(out.as_bytes());
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(sig.as_ref(), &mut out);
        out
    }
}

/// Why a JWS was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("not a compact JWS: {0}")]
    Malformed(&'static str),
    #[error("protected header is not a JSON object")]
    BadHeader,
    #[error("algorithm {0:?} is not accepted (EdDSA only)")]
    Algorithm(Option<String>),
    #[error("protected header has no kid")]
    NoKid,
    #[error("header marks extensions as critical ({0}); none is supported")]
    Critical(String),
    #[error("key id {0} is not in the key set")]
    UnknownKid(String),
    #[error("key {0} in the key set is not an Ed25519 signing key")]
    BadKey(String),
    #[error("signature does not verify with key {0}")]
    Signature(String),
}

/// Verifies a compact JWS against a key set: `alg` must be `EdDSA`, `kid` must name a key in
/// the set, the signature must verify. Returns the payload bytes.
pub fn verify(jws: &str, jwks: &JwkSet) -> Result<Vec<u8>, VerifyError> {
    let jws = jws.trim();
    let mut parts = jws.split('.');
    let (Some(h64), Some(p64), Some(s64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(VerifyError::Malformed(
            "expected three parts separated by '.'",
        ));
    };
    if h64.is_empty() || s64.is_empty() {
        return Err(VerifyError::Malformed("empty header or signature"));
    }
    let header = URL_SAFE_NO_PAD
        .decode(h64)
        .map_err(|_| VerifyError::Malformed("header is not base64url without padding"))?;
    let header: serde_json::Value =
        serde_json::from_slice(&header).map_err(|_| VerifyError::BadHeader)?;
    let header = header.as_object().ok_or(VerifyError::BadHeader)?;
    let alg = header.get("alg").and_then(|a| a.as_str());
    if alg != Some(ALG) {
        return Err(VerifyError::Algorithm(
            header
                .get("alg")
                .map(|a| a.as_str().map_or_else(|| a.to_string(), str::to_string)),
        ));
    }
    if let Some(crit) = header.get("crit") {
        return Err(VerifyError::Critical(crit.to_string()));
    }
    let kid = header
        .get("kid")
        .and_then(|k| k.as_str())
        .ok_or(VerifyError::NoKid)?;
    let jwk = jwks
        .keys
        .iter()
        .find(|k| match &k.kid {
            Some(k) => k == kid,
            // A JWK without kid is known by its RFC 7638 thumbprint.
            None => k.thumbprint() == kid,
        })
        .ok_or_else(|| VerifyError::UnknownKid(kid.to_string()))?;
    let usable = jwk.kty == "OKP"
        && jwk.crv == "Ed25519"
        && jwk.alg.as_deref().is_none_or(|a| a == ALG)
        && jwk.use_.as_deref().is_none_or(|u| u == "sig");
    if !usable {
        return Err(VerifyError::BadKey(kid.to_string()));
    }
    let public = URL_SAFE_NO_PAD
        .decode(&jwk.x)
        .ok()
        .filter(|x| x.len() == 32)
        .ok_or_else(|| VerifyError::BadKey(kid.to_string()))?;
    let sig = URL_SAFE_NO_PAD
        .decode(s64)
        .map_err(|_| VerifyError::Malformed("signature is not base64url without padding"))?;
    let signing_input = &jws[..h64.len() + 1 + p64.len()];
    signature::UnparsedPublicKey::new(&signature::ED25519, &public)
        .verify(signing_input.as_bytes(), &sig)
        .map_err(|_| VerifyError::Signature(kid.to_string()))?;
    URL_SAFE_NO_PAD
        .decode(p64)
        .map_err(|_| VerifyError::Malformed("payload is not base64url without padding"))
}

/// A directory of signing keys: `<kid>.pk8` files (0600) and the `active` pointer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyStore {
    dir: PathBuf,
}

impl KeyStore {
    pub fn new(dir: impl Into<PathBuf>) -> KeyStore {
        KeyStore { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn key_path(&self, kid: &str) -> PathBuf {
        self.dir.join(format!("{kid}.{KEY_EXT}"))
    }

    /// Generates a key, stores it (0600, never overwriting) and makes it the active key.
    /// Returns its kid. Creates the directory (0700) if missing.
    pub fn generate(&self) -> Result<String, KeyError> {
        create_private_dir(&self.dir)?;
        let (key, pkcs8) = SigningKey::generate()?;
        let path = self.key_path(key.kid());
        write_private(&path, pkcs8.as_bytes(), false)?;
        self.set_active(key.kid())?;
        Ok(key.kid().to_string())
    }

    /// Makes a stored key the active one (after checking it loads).
    pub fn set_active(&self, kid: &str) -> Result<(), KeyError> {
        self.load(kid)?;
        let tmp = self.dir.join(format!("{ACTIVE_FILE}.tmp"));
        write_private(&tmp, format!("{kid}\n").as_bytes(), true)?;
        let active = self.dir.join(ACTIVE_FILE);
        std::fs::rename(&tmp, &active).map_err(io(&active))?;
        if let Ok(d) = std::fs::File::open(&self.dir) {
            d.sync_all().map_err(io(&self.dir))?;
        }
        Ok(())
    }

    /// The kid the `active` file names.
    pub fn active_kid(&self) -> Result<String, KeyError> {
        let path = self.dir.join(ACTIVE_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(KeyError::NoActiveKey(self.dir.clone()));
            }
            Err(e) => return Err(io(&path)(e)),
        };
        let kid = text.trim();
        if !is_kid(kid) {
            return Err(KeyError::BadKid {
                path,
                value: kid.chars().take(64).collect(),
            });
        }
        Ok(kid.to_string())
    }

    /// The active signing key.
    pub fn active(&self) -> Result<SigningKey, KeyError> {
        let kid = self.active_kid()?;
        self.load(&kid)
    }

    /// Loads `<kid>.pk8`, refusing a file the group or others may access.
    pub fn load(&self, kid: &str) -> Result<SigningKey, KeyError> {
        if !is_kid(kid) {
            return Err(KeyError::BadKid {
                path: self.dir.clone(),
                value: kid.chars().take(64).collect(),
            });
        }
        load_private(&self.key_path(kid), kid)
    }

    /// The kids of every stored private key, sorted.
    pub fn kids(&self) -> Result<Vec<String>, KeyError> {
        let entries = std::fs::read_dir(&self.dir).map_err(io(&self.dir))?;
        let mut kids = Vec::new();
        for e in entries {
            let e = e.map_err(io(&self.dir))?;
            let p = e.path();
            if p.extension().is_some_and(|x| x == KEY_EXT)
                && let Some(stem) = p.file_stem().and_then(|s| s.to_str())
            {
                kids.push(stem.to_string());
            }
        }
        kids.sort();
        Ok(kids)
    }

    /// The public keys of every stored key (old ones included, for old reports).
    pub fn public_set(&self) -> Result<JwkSet, KeyError> {
        let mut keys = Vec::new();
        for kid in self.kids()? {
            keys.push(self.load(&kid)?.public_jwk());
        }
        Ok(JwkSet { keys })
    }

    /// Problem that must stop the daemon: the directory itself must be private (one others may
    /// enter or list exposes the key files' names, and a group with write access could replace
    /// `active` or a key). `None` when it is private or does not exist yet.
    pub fn check_dir_permissions(&self) -> Option<KeyError> {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(&self.dir).ok().filter(|m| m.is_dir())?;
        let mode = meta.permissions().mode() & 0o7777;
        (mode & 0o077 != 0).then(|| KeyError::DirPermissions {
            path: self.dir.clone(),
            mode,
        })
    }

    /// Problems that must stop the daemon: every `*.pk8` file present must be private.
    pub fn check_permissions(&self) -> Vec<KeyError> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == KEY_EXT))
            .collect();
        paths.sort();
        for p in paths {
            if let Err(e) = open_private(&p) {
                out.push(e);
            }
        }
        out
    }
}

fn create_private_dir(dir: &Path) -> Result<(), KeyError> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io(dir))
}

fn write_private(path: &Path, bytes: &[u8], replace: bool) -> Result<(), KeyError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).mode(0o600);
    if replace {
        opts.create(true).truncate(true);
    } else {
        opts.create_new(true);
    }
    let mut f = opts.open(path).map_err(io(path))?;
    f.write_all(bytes).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

/// Opens a private key file and checks, on the open file, that it is regular and private.
fn open_private(path: &Path) -> Result<std::fs::File, KeyError> {
    use std::os::unix::fs::PermissionsExt;
    let f = std::fs::File::open(path).map_err(io(path))?;
    let meta = f.metadata().map_err(io(path))?;
    if !meta.is_file() {
        return Err(KeyError::NotAFile(path.to_path_buf()));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Permissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(f)
}

fn load_private(path: &Path, kid: &str) -> Result<SigningKey, KeyError> {
    use std::io::Read;
    let mut f = open_private(path)?;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes).map_err(io(path))?;
    let key = SigningKey::from_pkcs8(&bytes).ok_or_else(|| KeyError::NotAKey(path.to_path_buf()));
    bytes.iter_mut().for_each(|b| *b = 0);
    let key = key?;
    if key.kid() != kid {
        return Err(KeyError::KidMismatch {
            path: path.to_path_buf(),
            actual: key.kid().to_string(),
        });
    }
    Ok(key)
}

#[cfg(test)]
mod tests;
