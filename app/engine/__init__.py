"""The pure injection core: select -> render -> mutate -> patch. No I/O, no HTTP, no Kubernetes client."""
