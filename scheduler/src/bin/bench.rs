//! `ferry-bench-scheduler`: placeholder replaced below.
fn main() {}
