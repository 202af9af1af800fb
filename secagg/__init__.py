"""fortis.secagg"""
