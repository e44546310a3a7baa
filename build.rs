//! `sqlx::migrate!` embeds `migrations/` at compile time; without this, a new migration
//! file is not picked up until something else makes Cargo rebuild the crate.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
