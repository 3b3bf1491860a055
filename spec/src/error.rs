//! Printing errors for people: an error and its causes on one line, `what: why: os error`, as
//! `wpod`'s CLI prints them and as events and probe messages show them. Each error's own message
//! leaves its cause out (the cause is its `source`), so no cause is printed twice.

use std::error::Error;
use std::fmt::Write;

/// `e` and its chain of causes, joined with `: `.
pub fn chain(e: &dyn Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let _ = write!(out, ": {c}");
        cause = c.source();
    }
    out
}
