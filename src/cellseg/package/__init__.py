"""A finished run packaged for others: bioimage.io export and shipping a model into the zoo."""
