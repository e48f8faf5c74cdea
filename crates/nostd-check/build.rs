//! Passes the profile's opt-level to the program (it prints it next to the stack measurement).
fn main() {
    let opt_level = std::env::var("OPT_LEVEL").unwrap_or_else(|_| "?".into());
    println!("cargo:rustc-env=NOSTD_CHECK_OPT_LEVEL={opt_level}");
}
