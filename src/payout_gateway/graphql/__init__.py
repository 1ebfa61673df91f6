"""Strawberry schema: types, inputs, result unions, thin resolvers, loaders, context."""
