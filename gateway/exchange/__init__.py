"""Purpose-bound exchange: the request pipeline from an authenticated partner system to the holders."""
