//! Internal errors (a broken invariant, a failed task, a bug in a library): the client is told that
//! one happened and its number, the server's log gets the details under the same number. Their text
//! (plans, file layouts, library internals) is for operators, not for whoever sent the statement.

use std::sync::atomic::{AtomicU64, Ordering};

static NEXT: AtomicU64 = AtomicU64::new(1);

/// Logs `detail` as internal error number N and returns the message a client gets for it.
pub fn internal_message(detail: &str) -> String {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    tracing::error!(incident = n, "internal error #{n}: {detail}");
    format!("internal error #{n}; the server's log has the details")
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_client_gets_a_number_not_the_details() {
        let a = super::internal_message("segment 17 of table 3 at /data/tables/3/17.seg");
        let b = super::internal_message("again");
        assert!(a.starts_with("internal error #") && !a.contains("/data"), "{a}");
        assert_ne!(a, b);
    }
}
