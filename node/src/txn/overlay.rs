//! A transaction's own buffered writes laid over a scan page read from storage.
//!
//! ```text
//!   stored page  a1  b1  c1  d1 | more        (read at start_ts, within the byte budget)
//!   buffered         b=del   c2      e9       (only those up to the page's last key, d,
//!                                              count when the page stopped early)
//!   result       a1      c2  d1 | more        (limit and byte budget applied again)
//! ```
//!
//! The storage page is fetched with room for one extra row per buffered write in the range
//! (each may hide or replace a stored row). Buffered writes past the page's last key are
//! left out when the page stopped early: the rows they would sit between were not read. The
//! result's `more` is then set, and the client continues after the last key returned, where
//! those writes are met again.

use crate::mvcc::{ScanLimit, ScanPage};

/// `stored` (in scan order) with `buffered` (the transaction's writes in the scanned range,
/// in the same order; `None` deletes) laid over it, cut to `limit`.
pub fn overlay<'a>(
    stored: ScanPage,
    buffered: impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)>,
    reverse: bool,
    limit: ScanLimit,
) -> ScanPage {
    let stored_more = stored.more;
    let boundary = if stored.more {
        stored.pairs.last().map(|(k, _)| k.clone())
    } else {
        None
    };
    let within = |k: &[u8]| {
        boundary
            .as_deref()
            .is_none_or(|b| if reverse { k >= b } else { k <= b })
    };
    let before = |a: &[u8], b: &[u8]| if reverse { a > b } else { a < b };
    let mut buffered = buffered.take_while(|(k, _)| within(k)).peekable();
    let mut rows = stored.pairs.into_iter().peekable();
    let mut page = ScanPage::default();
    let mut bytes = 0usize;
    loop {
        let (pair, hides_row) = match (rows.peek(), buffered.peek()) {
            (None, None) => break,
            (Some((row, _)), Some(&(key, _))) if before(row, key) => (None, false),
            (Some(_), None) => (None, false),
            (row, Some(&(key, value))) => (
                Some(value.map(|v| (key, v))),
                row.is_some_and(|(r, _)| r.as_slice() == key),
            ),
        };
        match pair {
            // The next row is a stored one.
            None => {
                if !limit.has_room(page.pairs.len(), bytes) {
                    page.more = true;
                    break;
                }
                if let Some((k, v)) = rows.next() {
                    bytes = bytes.saturating_add(k.len() + v.len());
                    page.pairs.push((k, v));
                }
            }
            // A buffered delete: it hides the stored row of its key, if any.
            Some(None) => {
                buffered.next();
                if hides_row {
                    rows.next();
                }
            }
            // A buffered put: it replaces the stored row of its key, if any.
            Some(Some((k, v))) => {
                if !limit.has_room(page.pairs.len(), bytes) {
                    page.more = true;
                    break;
                }
                buffered.next();
                if hides_row {
                    rows.next();
                }
                bytes = bytes.saturating_add(k.len() + v.len());
                page.pairs.push((k.to_vec(), v.to_vec()));
            }
        }
    }
    page.more |= stored_more;
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(keys: &[&str], more: bool) -> ScanPage {
        ScanPage {
            pairs: keys
                .iter()
                .map(|k| (k.as_bytes().to_vec(), b"s".to_vec()))
                .collect(),
            more,
        }
    }

    fn run(
        stored: ScanPage,
        buffered: &[(&str, Option<&str>)],
        reverse: bool,
        limit: ScanLimit,
    ) -> (Vec<String>, bool) {
        let it = buffered
            .iter()
            .map(|(k, v)| (k.as_bytes(), v.map(str::as_bytes)));
        let out = overlay(stored, it, reverse, limit);
        let rows = out
            .pairs
            .iter()
            .map(|(k, v)| {
                format!(
                    "{}={}",
                    String::from_utf8_lossy(k),
                    String::from_utf8_lossy(v)
                )
            })
            .collect();
        (rows, out.more)
    }

    #[test]
    fn buffered_writes_replace_hide_and_add_rows() {
        let buffered = [("b", None), ("c", Some("x")), ("e", Some("y"))];
        let (rows, more) = run(
            page(&["a", "b", "c", "d"], false),
            &buffered,
            false,
            ScanLimit::pairs(10),
        );
        assert_eq!(rows, ["a=s", "c=x", "d=s", "e=y"]);
        assert!(!more);
        let reversed: Vec<_> = buffered.iter().rev().copied().collect();
        let (rows, _) = run(
            page(&["d", "c", "b", "a"], false),
            &reversed,
            true,
            ScanLimit::pairs(10),
        );
        assert_eq!(rows, ["e=y", "d=s", "c=x", "a=s"]);
    }

    #[test]
    fn writes_past_an_early_stopped_page_wait_for_the_next_page() {
        let buffered = [("c", Some("x")), ("e", Some("y"))];
        let (rows, more) = run(
            page(&["a", "d"], true),
            &buffered,
            false,
            ScanLimit::pairs(10),
        );
        assert_eq!(
            (rows, more),
            (vec!["a=s".into(), "c=x".into(), "d=s".into()], true)
        );
        let (rows, more) = run(
            page(&["d", "b"], true),
            &[("e", Some("y")), ("c", Some("x")), ("a", Some("z"))],
            true,
            ScanLimit::pairs(10),
        );
        assert_eq!(rows, ["e=y", "d=s", "c=x", "b=s"]);
        assert!(more);
    }

    #[test]
    fn the_limit_and_budget_apply_to_the_merged_rows() {
        let buffered = [("a0", Some("x")), ("b", None)];
        let (rows, more) = run(
            page(&["a", "b", "c"], false),
            &buffered,
            false,
            ScanLimit::pairs(2),
        );
        assert_eq!((rows, more), (vec!["a=s".into(), "a0=x".into()], true));
        // Only the delete is left after the limit: nothing visible remains.
        let (rows, more) = run(
            page(&["a", "b"], false),
            &buffered,
            false,
            ScanLimit::pairs(2),
        );
        assert_eq!((rows, more), (vec!["a=s".into(), "a0=x".into()], false));
        let budget = ScanLimit {
            pairs: 10,
            bytes: 3,
        };
        let (rows, more) = run(page(&["a", "c"], false), &buffered, false, budget);
        assert_eq!((rows, more), (vec!["a=s".into(), "a0=x".into()], true));
    }
}
