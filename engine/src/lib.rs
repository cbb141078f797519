pub mod error; pub mod params; pub mod port; pub mod spec; pub mod stage;
