"""The `InjectionPolicy` schema (`model`) and how a refused document is told (`messages`): the bottom
layer, imported by the engine and everything above it."""
