//! The writer every list goes through: a table whose columns the first
//! page sizes, or one streamed JSON object, each item written once and
//! never held. Apart from the listed types so how a list is laid out is
//! decided in one place, and a million rows print in constant memory.

use super::Listing;

/// Prints a list as its pages arrive: each item is written once and never
/// held, so a million sessions print in constant memory. A table's column
/// widths are set by the first page (a longer cell later widens only its own
/// row); JSON is one `{KEY: [...]}` object written item by item, an item
/// per line (so it also greps and streams line by line). Output
/// stops quietly when stdout closes (`| head`).
pub(super) struct Printer {
    as_json: bool,
    /// Column widths once the first page set them; items written so far.
    widths: Option<Vec<usize>>,
    written: usize,
    out: std::io::BufWriter<std::io::Stdout>,
    closed: bool,
}

impl Printer {
    pub(super) fn new(as_json: bool) -> Printer {
        let out = std::io::BufWriter::new(std::io::stdout());
        Printer { as_json, widths: None, written: 0, out, closed: false }
    }

    pub(super) fn page<T: Listing>(&mut self, list: &[T]) {
        if self.widths.is_none() {
            let widths = match self.as_json {
                true => {
                    self.write(format_args!("{{\"{}\":[", T::KEY));
                    Vec::new()
                }
                false => {
                    let mut widths: Vec<usize> = T::HEADER.iter().map(|h| h.len()).collect();
                    for row in list.iter().map(T::row) {
                        for (w, cell) in widths.iter_mut().zip(&row) {
                            *w = (*w).max(cell.len());
                        }
                    }
                    let header = T::HEADER.iter().map(|s| s.to_string()).collect();
                    self.line(&widths, header);
                    widths
                }
            };
            self.widths = Some(widths);
        }
        let widths = self.widths.clone().unwrap_or_default();
        for item in list {
            match self.as_json {
                true => {
                    let comma = if self.written == 0 { "" } else { "," };
                    self.write(format_args!("{comma}\n{}", item.json()));
                }
                false => self.line(&widths, item.row()),
            }
            self.written += 1;
        }
    }

    fn line(&mut self, widths: &[usize], cells: Vec<String>) {
        let padded: Vec<String> = cells.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        self.write(format_args!("{}\n", padded.join("  ").trim_end()));
    }

    fn write(&mut self, text: std::fmt::Arguments<'_>) {
        use std::io::Write;
        if !self.closed && self.out.write_fmt(text).is_err() {
            self.closed = true;
        }
    }

    pub(super) fn finish(mut self) {
        use std::io::Write;
        if self.as_json {
            let newline = if self.written == 0 { "" } else { "\n" };
            self.write(format_args!("{newline}]}}\n"));
        }
        let _ = self.out.flush();
    }
}
