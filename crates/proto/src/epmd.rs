//! Port-mapper (EPMD) requests and responses.
