fn main() -> std::process::ExitCode {
    recwatch::cli::main()
}
