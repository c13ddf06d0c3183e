"""The `InjectionPolicy` schema: the bottom layer, imported by the engine and everything above it."""
