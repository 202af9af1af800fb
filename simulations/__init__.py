"""fortis.simulations"""
