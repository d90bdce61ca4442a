fn main() -> std::process::ExitCode {
    node_init::cli::main()
}
