// Embedded migrations (`sqlx::migrate!`) must be re-embedded when a migration file changes.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
