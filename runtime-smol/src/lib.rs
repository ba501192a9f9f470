//! The parts of the `crier` daemon that other crates use: the configuration loader, which
//! the fuzz targets drive with arbitrary YAML.

pub mod config;
