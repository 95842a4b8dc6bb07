fn main() {
    std::process::exit(loratool::cli::run());
}
