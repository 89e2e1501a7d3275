//! Page sizes and page tokens of the list RPCs. A token carries a position (an offset, or a
//! keyset cursor) and a fingerprint of the request's filters, so a token is refused when the
//! filters change between pages.

use std::fmt::Write as _;

use sha2::{Digest, Sha256};

use crate::AuditError;

/// Page size when the request leaves it 0.
pub const DEFAULT_PAGE: usize = 100;
/// Largest page; larger requests are treated as this.
pub const MAX_PAGE: usize = 1000;

/// The page size a request asks for: default 100, at most 1000, never negative.
pub fn page_size(size: i32) -> Result<usize, AuditError> {
    match usize::try_from(size) {
        Err(_) => Err(AuditError::invalid("page_size", "must not be negative")),
        Ok(0) => Ok(DEFAULT_PAGE),
        Ok(n) => Ok(n.min(MAX_PAGE)),
    }
}

fn fingerprint(filters: &str) -> String {
    let digest = Sha256::digest(filters.as_bytes());
    let mut out = String::with_capacity(12);
    for byte in digest.iter().take(6) {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// A token for `position` under `filters` (a stable rendering of the request without its token).
pub fn encode(position: &str, filters: &str) -> String {
    format!("{position}~{}", fingerprint(filters))
}

/// The position in `token`; `None` for the first page.
pub fn decode(token: &str, filters: &str) -> Result<Option<String>, AuditError> {
    if token.is_empty() {
        return Ok(None);
    }
    let malformed = || AuditError::invalid("page_token", "malformed, or the filters changed between pages");
    let (position, print) = token.rsplit_once('~').ok_or_else(malformed)?;
    if print != fingerprint(filters) || position.is_empty() {
        return Err(malformed());
    }
    Ok(Some(position.to_owned()))
}

/// The offset in an offset token.
pub fn decode_offset(token: &str, filters: &str) -> Result<usize, AuditError> {
    match decode(token, filters)? {
        None => Ok(0),
        Some(position) => position.parse().map_err(|_| AuditError::invalid("page_token", "malformed offset")),
    }
}

/// The token after a page that started at `offset` and returned `returned` of `total` items.
pub fn next_offset_token(offset: usize, returned: usize, total: usize, filters: &str) -> String {
    let next = offset + returned;
    if returned == 0 || next >= total { String::new() } else { encode(&next.to_string(), filters) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_refuse_other_filters() {
        let token = encode("2026-11-25T00:00:00.000000Z|42", "project=p1");
        assert_eq!(decode(&token, "project=p1").unwrap().as_deref(), Some("2026-11-25T00:00:00.000000Z|42"));
        assert!(decode(&token, "project=p2").is_err());
        assert!(decode("garbage", "project=p1").is_err());
        assert_eq!(decode("", "x").unwrap(), None);
        assert_eq!(next_offset_token(0, 100, 100, "x"), "");
        assert_eq!(decode_offset(&next_offset_token(100, 100, 250, "x"), "x").unwrap(), 200);
    }

    #[test]
    fn page_sizes_default_and_clamp() {
        assert_eq!(page_size(0).unwrap(), DEFAULT_PAGE);
        assert_eq!(page_size(5000).unwrap(), MAX_PAGE);
        assert!(page_size(-1).is_err());
    }
}
