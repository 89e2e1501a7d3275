fn main() {
    // `migrate!` embeds the migration files; cargo must rebuild when one is added.
    println!("cargo:rerun-if-changed=migrations");
}
