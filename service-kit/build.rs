fn main() {
    // `migrate!` embeds migration files; cargo must rebuild when one is added.
    println!("cargo:rerun-if-changed=tests/migrations");
}
