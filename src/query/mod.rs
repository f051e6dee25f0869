//! Reading events back: filters and cursors shared by every endpoint and tier.
//!
//! Pages are newest first, ordered by (event time, id). The cursor is the position of
//! the last item of a page, opaque to clients; the next page holds what sorts after
//! it, so paging never repeats or skips an item that existed when the first page was
//! read, however many events arrive meanwhile.

pub mod filter;
pub mod lockouts;
pub mod memory;

pub use filter::{Cursor, Filters, IpFilter, QueryError};

use crate::event::Category;
use crate::keys::{Permission, Principal};

/// The permission needed to view events of `category`.
pub fn view_permission(category: Category) -> Permission {
    match category {
        Category::Auth => Permission::LogsAuthView,
        Category::Security => Permission::LogsSecurityView,
        Category::Financial => Permission::LogsFinancialView,
        Category::Audit | Category::Api | Category::Error | Category::Access => Permission::LogsActionsView,
    }
}

/// The categories `principal` may view.
pub fn visible_categories(principal: &Principal) -> Vec<Category> {
    Category::ALL.into_iter().filter(|c| principal.can(view_permission(*c))).collect()
}
