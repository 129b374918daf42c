//! Paging through a list (protocol version 4): one page, every page in
//! turn, or every item collected. Apart from the requests because every
//! list request of `api`, `admin` and `licenses` pages the same way.

use super::api::unexpected;
use super::{Client, ClientError};
use crate::proto::{Cursor, ListOf, MissingNode, PageItems, Req, Resp};

impl Client {
    /// One page of a list (protocol version 4): its items, and the cursor
    /// of the next page (none after the last). `limit` 0: as many as fit.
    pub async fn page(
        &self,
        of: ListOf,
        after: Option<Cursor>,
        limit: u32,
    ) -> Result<(PageItems, Option<Cursor>), ClientError> {
        self.report_page(of, after, limit).await.map(|(items, next, _)| (items, next))
    }

    /// `page`, with the nodes of a cluster whose part of a report (`Usage`,
    /// `Ended`) the page lacks (version 6's `Partial`; none from an older
    /// broker, which only logs them).
    pub async fn report_page(
        &self,
        of: ListOf,
        after: Option<Cursor>,
        limit: u32,
    ) -> Result<(PageItems, Option<Cursor>, Vec<MissingNode>), ClientError> {
        let (answer, missing) = partial(self.call(Req::List { of, after, limit }).await?);
        match answer {
            Resp::Page { items, next } => Ok((items, next, missing)),
            other => unexpected(other),
        }
    }

    /// Every page of a list in order, each handed to `each` as it arrives
    /// (so a million sessions never sit in memory at once); the nodes any
    /// page named missing (`report_page`), each once.
    pub async fn each_page(
        &self,
        of: ListOf,
        mut each: impl FnMut(PageItems),
    ) -> Result<Vec<MissingNode>, ClientError> {
        let (mut after, mut missing): (Option<Cursor>, Vec<MissingNode>) = (None, Vec::new());
        loop {
            let (items, next, named) = self.report_page(of.clone(), after.clone(), 0).await?;
            for m in named {
                if !missing.iter().any(|seen| seen.node == m.node) {
                    missing.push(m);
                }
            }
            let empty = items.is_empty();
            each(items);
            match next {
                None => return Ok(missing),
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

/// A report's answer and the nodes it names missing (`Resp::Partial`, a
/// version 5 broker's on a cluster), or the answer as it came.
pub(super) fn partial(resp: Resp) -> (Resp, Vec<MissingNode>) {
    match resp {
        Resp::Partial { answer, missing } => (*answer, missing),
        other => (other, Vec::new()),
    }
}
