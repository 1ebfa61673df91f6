"""Provider adapters: one package per provider, each an I/O shell around pure transformers."""
