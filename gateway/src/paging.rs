//! The seed's `limit`/`offset` paging over the services' `page_size`/`page_token` paging.
//!
//! `page_token` (from a previous response's `next_page_token`) is the efficient way to page;
//! `offset` is emulated by reading forward from the first row, so it is capped at
//! [`MAX_OFFSET`]. Every page ends exactly where the caller's page ends, so the returned
//! `next_page_token` continues right after the last row returned.

use std::future::Future;

use serde::Deserialize;
use utoipa::IntoParams;

use crate::error::ApiError;

/// Most rows one page may ask for (the services' own maximum).
pub const MAX_LIMIT: u32 = 1000;
/// Largest emulated offset; beyond it, use `page_token`.
pub const MAX_OFFSET: u32 = 100_000;

/// Paging parameters shared by the list endpoints.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Rows to return, 1 to 1000 (endpoint-specific default).
    pub limit: Option<u32>,
    /// Rows to skip (emulated by reading forward; at most 100000). Not with `page_token`.
    pub offset: Option<u32>,
    /// `next_page_token` of a previous response with the same filters.
    pub page_token: Option<String>,
}

/// Validated paging.
#[derive(Debug, Clone)]
pub struct Paging {
    /// Rows to return.
    pub limit: u32,
    /// Rows to skip.
    pub offset: u32,
    /// Where to continue.
    pub page_token: String,
}

impl PageQuery {
    /// Validates against the endpoint's default limit.
    pub fn paging(&self, default_limit: u32) -> Result<Paging, ApiError> {
        let limit = self.limit.unwrap_or(default_limit);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(ApiError::invalid("limit", format!("must be from 1 to {MAX_LIMIT}")));
        }
        let offset = self.offset.unwrap_or(0);
        if offset > MAX_OFFSET {
            return Err(ApiError::invalid("offset", format!("must be at most {MAX_OFFSET}; use page_token")));
        }
        let page_token = self.page_token.clone().unwrap_or_default();
        if offset > 0 && !page_token.is_empty() {
            return Err(ApiError::invalid("offset", "give either offset or page_token, not both"));
        }
        Ok(Paging { limit, offset, page_token })
    }
}

/// One page of rows with where to continue.
#[derive(Debug)]
pub struct Page<T> {
    /// The rows.
    pub rows: Vec<T>,
    /// Token for the rows after these; `None` on the last page.
    pub next_page_token: Option<String>,
}

/// Reads one page through `fetch(page_size, page_token)`, which returns rows and the next token.
pub async fn read<T, F, Fut>(paging: &Paging, mut fetch: F) -> Result<Page<T>, ApiError>
where
    F: FnMut(i32, String) -> Fut,
    Fut: Future<Output = Result<(Vec<T>, String), tonic::Status>>,
{
    let mut to_skip = paging.offset;
    let mut rows = Vec::new();
    let mut token = paging.page_token.clone();
    loop {
        let wanted = to_skip + paging.limit - rows.len() as u32;
        let (mut page, next) = fetch(wanted.min(MAX_LIMIT) as i32, token).await?;
        let skipped = (to_skip as usize).min(page.len());
        page.drain(..skipped);
        to_skip -= skipped as u32;
        rows.extend(page);
        if next.is_empty() {
            return Ok(Page { rows, next_page_token: None });
        }
        if rows.len() as u32 >= paging.limit {
            return Ok(Page { rows, next_page_token: Some(next) });
        }
        token = next;
    }
}

/// Reads every row (up to `cap`), for small collections filtered in the gateway.
pub async fn read_all<T, F, Fut>(cap: usize, mut fetch: F) -> Result<Vec<T>, ApiError>
where
    F: FnMut(i32, String) -> Fut,
    Fut: Future<Output = Result<(Vec<T>, String), tonic::Status>>,
{
    let mut rows = Vec::new();
    let mut token = String::new();
    loop {
        let (page, next) = fetch(MAX_LIMIT as i32, token).await?;
        rows.extend(page);
        if next.is_empty() || rows.len() >= cap {
            return Ok(rows);
        }
        token = next;
    }
}

/// Applies `offset` and `limit` to rows already in memory.
pub fn slice<T>(rows: Vec<T>, paging: &Paging) -> Vec<T> {
    rows.into_iter().skip(paging.offset as usize).take(paging.limit as usize).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn numbers(size: i32, token: String) -> Result<(Vec<u32>, String), tonic::Status> {
        let start: u32 = if token.is_empty() { 0 } else { token.parse().unwrap() };
        let end = (start + size as u32).min(25);
        let next = if end < 25 { end.to_string() } else { String::new() };
        Ok(((start..end).collect(), next))
    }

    #[tokio::test]
    async fn offset_is_emulated_and_the_token_continues_after_the_last_row() {
        let paging = PageQuery { limit: Some(5), offset: Some(7), page_token: None }.paging(100).unwrap();
        let page = read(&paging, numbers).await.unwrap();
        assert_eq!(page.rows, vec![7, 8, 9, 10, 11]);
        let next =
            PageQuery { limit: Some(5), offset: None, page_token: page.next_page_token }.paging(100).unwrap();
        assert_eq!(read(&next, numbers).await.unwrap().rows, vec![12, 13, 14, 15, 16]);
        let tail = PageQuery { limit: Some(10), offset: Some(20), page_token: None }.paging(100).unwrap();
        let page = read(&tail, numbers).await.unwrap();
        assert_eq!(page.rows, vec![20, 21, 22, 23, 24]);
        assert!(page.next_page_token.is_none());
    }

    #[test]
    fn limits_are_checked_naming_the_parameter() {
        let err = PageQuery { limit: Some(5000), ..PageQuery::default() }.paging(100).unwrap_err();
        assert_eq!(err.detail().field.as_deref(), Some("limit"));
        let err = PageQuery { offset: Some(3), page_token: Some("x".into()), ..PageQuery::default() }
            .paging(100)
            .unwrap_err();
        assert_eq!(err.detail().field.as_deref(), Some("offset"));
    }
}
