//! Paging through a list (protocol version 4): one page, every page in
//! turn, or every item collected. Apart from the requests because every
//! list request of `api`, `admin` and `licenses` pages the same way.

use super::api::unexpected;
use super::{Client, ClientError};
use crate::proto::{Cursor, ListOf, PageItems, Req, Resp};

impl Client {
    /// One page of a list (protocol version 4): its items, and the cursor
    /// of the next page (none after the last). `limit` 0: as many as fit.
    pub async fn page(
        &self,
        of: ListOf,
        after: Option<Cursor>,
        limit: u32,
    ) -> Result<(PageItems, Option<Cursor>), ClientError> {
        match self.call(Req::List { of, after, limit }).await? {
            Resp::Page { items, next } => Ok((items, next)),
            other => unexpected(other),
        }
    }

    /// Every page of a list in order, each handed to `each` as it arrives
    /// (so a million sessions never sit in memory at once).
    pub async fn each_page(&self, of: ListOf, mut each: impl FnMut(PageItems)) -> Result<(), ClientError> {
        let mut after: Option<Cursor> = None;
        loop {
            let (items, next) = self.page(of.clone(), after.clone(), 0).await?;
            let empty = items.is_empty();
            each(items);
            match next {
                None => return Ok(()),
                // A cursor that does not move would page for ever.
                Some(c) if empty || after.as_ref() == Some(&c) => {
                    return Err(ClientError::Protocol(format!("the broker's {of:?} pages stopped advancing")));
                }
                Some(c) => after = Some(c),
            }
        }
    }

    /// Every item of a list, paged through and collected; `take` unwraps
    /// the list's own variant.
    pub(super) async fn all<T>(
        &self,
        of: ListOf,
        take: fn(PageItems) -> Result<Vec<T>, PageItems>,
    ) -> Result<Vec<T>, ClientError> {
        let (mut out, mut wrong) = (Vec::new(), None);
        self.each_page(of, |items| match take(items) {
            Ok(v) => out.extend(v),
            Err(other) => wrong = Some(other),
        })
        .await?;
        match wrong {
            None => Ok(out),
            Some(other) => Err(ClientError::Protocol(format!("unexpected page {other:?}"))),
        }
    }
}
