fn main() {
    println!("dledger-replica {}", env!("CARGO_PKG_VERSION"));
}
