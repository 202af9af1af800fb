"""fortis.protocol"""
