"""Model providers: the Provider protocol, adapters, pricing and the local fake."""
