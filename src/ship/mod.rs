//! Shipping events to systems outside tierlog as they are acknowledged: Loki's push
//! API ([`loki`]), for deployments without a log shipper reading the files.

pub mod loki;
