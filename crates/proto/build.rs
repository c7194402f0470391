fn main() {
    println!("cargo:rerun-if-changed=proto");
    connectrpc_build::Config::new()
        .files(&[
            "proto/process/process.proto",
            "proto/filesystem/filesystem.proto",
        ])
        .includes(&["proto/"])
        .include_file("_connectrpc.rs")
        .compile()
        .expect("compiling envd protos (needs protoc: apt-get install protobuf-compiler)");
}
