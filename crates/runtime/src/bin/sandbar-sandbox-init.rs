//! The sandbox helper alone, for the runtime's own tests and benchmarks (the
//! `sandbar` binary runs the same code as `sandbar __sandbox-init`).

fn main() {
    sandbar_runtime::init::main_if_requested();
    eprintln!(
        "usage: sandbar-sandbox-init {} < spec.json (started by the sandbar runtime)",
        sandbar_runtime::init::INIT_ARG
    );
    std::process::exit(2);
}
