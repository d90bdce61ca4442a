# node-init's recipes. `pip install rust-just` installs just.

# List the recipes.
default:
    @just --list

# Build every crate (debug).
build:
    cargo build --workspace --locked

# Build the fully static release binary and show that it is static.
static:
    bin=$(scripts/static) && file "$bin" && ls -l "$bin"

# Run every test tier (installs the system packages the tests need).
test:
    scripts/test-all

# The VM tier alone: the built image boots under QEMU and does the first boot.
e2e:
    scripts/e2e

# Formatting and clippy, as CI runs them.
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets --locked -- -D warnings

# Benchmarks: start-up vs cloud-init, verify vs dig+nc, build vs tar|pigz.
bench:
    scripts/bench

# The first boot, measured: overlapped, serial, and by cloud-init (VM boots).
bench-boot:
    scripts/bench-boot
