//! The service user's password: where it comes from, Fernet decryption, secret files, and a
//! redactor that scrubs every configured secret out of text that leaves the process.
//!
//! No Fernet TTL is applied: the ciphertext is a configuration value written once by an operator,
//! and a TTL would make a working deployment fail on an arbitrary later day.

use std::path::Path;

use openstack::{AuthMethod, CloudConfig};
use secrecy::{ExposeSecret, SecretString};

/// Where the service user's password came from (`StatusResponse.password_source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordSource {
    /// `SNAPSHOT_SERVICE_USER_PASSWORD` or its `_FILE`.
    Plaintext,
    /// Fernet, key and ciphertext from the environment.
    Fernet,
    /// Fernet, key or ciphertext from a `*_FILE`.
    FernetFile,
    /// No password configured.
    None,
}

impl PasswordSource {
    /// The contract's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plaintext => "plaintext",
            Self::Fernet => "fernet",
            Self::FernetFile => "fernet-file",
            Self::None => "none",
        }
    }
}

/// How much of a secret file's surroundings to strip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trim {
    /// Only the trailing line break editors and `echo` add: a password may contain spaces.
    LineEnd,
    /// All surrounding white space (keys and ciphertexts have none of their own).
    Whitespace,
}

/// Reads a mounted secret. The problem text names the path, never the content.
pub fn read_secret_file(path: &Path, trim: Trim) -> Result<SecretString, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let text = String::from_utf8(bytes).map_err(|_| format!("{} is not UTF-8 text", path.display()))?;
    let trimmed = match trim {
        Trim::LineEnd => text.trim_end_matches(['\n', '\r']),
        Trim::Whitespace => text.trim(),
    };
    if trimmed.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(SecretString::from(trimmed.to_owned()))
}

/// Decrypts the Fernet ciphertext of the password. The error names the variables at fault and
/// tells a malformed key, a malformed ciphertext and a failed decryption apart, never showing
/// either secret.
pub fn decrypt_password(key: &SecretString, ciphertext: &SecretString) -> Result<SecretString, String> {
    let fernet = fernet::Fernet::new(key.expose_secret().trim()).ok_or_else(|| {
        "SNAPSHOT_PASSWORD_KEY is not a Fernet key (32 bytes in url-safe base64, 44 characters)".to_owned()
    })?;
    let ciphertext = ciphertext.expose_secret().trim();
    if !looks_like_fernet_token(ciphertext) {
        return Err(
            "SNAPSHOT_USER_PASSWORD_ENCRYPTED is not a Fernet token (url-safe base64 starting with gAAAAA)"
                .to_owned(),
        );
    }
    let plaintext = fernet.decrypt(ciphertext).map_err(|_| {
        "SNAPSHOT_USER_PASSWORD_ENCRYPTED does not decrypt with SNAPSHOT_PASSWORD_KEY (wrong key or altered ciphertext)"
            .to_owned()
    })?;
    let password = String::from_utf8(plaintext).map_err(|_| {
        "SNAPSHOT_USER_PASSWORD_ENCRYPTED decrypts to something that is not UTF-8 text".to_owned()
    })?;
    if password.is_empty() {
        return Err("SNAPSHOT_USER_PASSWORD_ENCRYPTED decrypts to an empty password".to_owned());
    }
    Ok(SecretString::from(password))
}

/// The shape of a Fernet token: version byte 0x80 (so `g...`), url-safe base64, at least one
/// cipher block (73 bytes, 100 characters with padding).
fn looks_like_fernet_token(text: &str) -> bool {
    text.starts_with('g')
        && text.len() >= 96
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'='))
}

/// Known secrets, replaced by `[redacted]` in any text about to be logged or returned. A second
/// line of defence: messages are built from Keystone's answers, which should never echo them.
#[derive(Clone, Default)]
pub struct Redactor {
    secrets: Vec<SecretString>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor").field("secrets", &self.secrets.len()).finish()
    }
}

impl Redactor {
    /// Adds a secret; very short ones are skipped so ordinary words are not mangled.
    pub fn add(&mut self, secret: &SecretString) {
        if secret.expose_secret().len() >= 4 {
            self.secrets.push(secret.clone());
        }
    }

    /// Adds the admin credential of `cloud`.
    pub fn add_cloud(&mut self, cloud: &CloudConfig) {
        match &cloud.auth {
            AuthMethod::Password { password, .. } => self.add(password),
            AuthMethod::ApplicationCredential { secret, .. } => self.add(secret),
            AuthMethod::Token { token, .. } => self.add(token),
        }
    }

    /// `text` with every known secret replaced.
    pub fn scrub(&self, text: &str) -> String {
        let mut clean = text.to_owned();
        for secret in &self.secrets {
            let secret = secret.expose_secret();
            if clean.contains(secret) {
                clean = clean.replace(secret, "[redacted]");
            }
        }
        clean
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn secret(text: &str) -> SecretString {
        SecretString::from(text.to_owned())
    }

    #[test]
    fn a_valid_ciphertext_decrypts() {
        let key = fernet::Fernet::generate_key();
        let ciphertext = fernet::Fernet::new(&key).unwrap().encrypt(b"s3rvice-pw");
        let password = decrypt_password(&secret(&key), &secret(&ciphertext)).unwrap();
        assert_eq!(password.expose_secret(), "s3rvice-pw");
    }

    #[test]
    fn python_cryptography_tokens_decrypt() {
        // The Fernet spec's test vector (as Python's `cryptography` writes them); no TTL applies.
        let key = "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=";
        let token = "gAAAAAAdwJ6wAAECAwQFBgcICQoLDA0ODy021cpGVWKZ_eEwCGM4BLLF_5CV9dOPmrhuVUPgJobwOz7JcbmrR64jVmpU4IwqDA==";
        assert_eq!(decrypt_password(&secret(key), &secret(token)).unwrap().expose_secret(), "hello");
    }

    #[test]
    fn a_wrong_key_fails_without_showing_either_secret() {
        let key = fernet::Fernet::generate_key();
        let other = fernet::Fernet::generate_key();
        let ciphertext = fernet::Fernet::new(&key).unwrap().encrypt(b"s3rvice-pw");
        let err = decrypt_password(&secret(&other), &secret(&ciphertext)).unwrap_err();
        assert!(err.contains("wrong key or altered ciphertext"), "{err}");
        for leaked in [key.as_str(), other.as_str(), ciphertext.as_str(), "s3rvice-pw"] {
            assert!(!err.contains(leaked));
        }
    }

    #[test]
    fn a_tampered_ciphertext_fails() {
        let key = fernet::Fernet::generate_key();
        let ciphertext = fernet::Fernet::new(&key).unwrap().encrypt(b"s3rvice-pw");
        let mut bytes = ciphertext.into_bytes();
        let middle = bytes.len() / 2;
        bytes[middle] = if bytes[middle] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).unwrap();
        let err = decrypt_password(&secret(&key), &secret(&tampered)).unwrap_err();
        assert!(err.contains("altered ciphertext"), "{err}");
    }

    #[test]
    fn malformed_key_and_ciphertext_are_told_apart() {
        let key = fernet::Fernet::generate_key();
        let err = decrypt_password(&secret("not-a-key"), &secret("whatever")).unwrap_err();
        assert!(err.starts_with("SNAPSHOT_PASSWORD_KEY is not a Fernet key"), "{err}");
        assert!(!err.contains("not-a-key"));
        let err = decrypt_password(&secret(&key), &secret("plain-password-by-mistake")).unwrap_err();
        assert!(err.starts_with("SNAPSHOT_USER_PASSWORD_ENCRYPTED is not a Fernet token"), "{err}");
        assert!(!err.contains("plain-password-by-mistake"));
    }

    #[test]
    fn secret_files_lose_their_line_end_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, " pass word \n").unwrap();
        assert_eq!(read_secret_file(&path, Trim::LineEnd).unwrap().expose_secret(), " pass word ");
        assert_eq!(read_secret_file(&path, Trim::Whitespace).unwrap().expose_secret(), "pass word");
        std::fs::write(&path, "\n").unwrap();
        assert!(read_secret_file(&path, Trim::LineEnd).unwrap_err().ends_with("is empty"));
    }

    #[test]
    fn the_redactor_scrubs_known_secrets() {
        let mut redactor = Redactor::default();
        redactor.add(&secret("hunter2!"));
        redactor.add(&secret("ab"));
        assert_eq!(redactor.scrub("login with hunter2! failed: ab"), "login with [redacted] failed: ab");
        assert!(!format!("{redactor:?}").contains("hunter2"));
    }
}
