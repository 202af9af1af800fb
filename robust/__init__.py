"""fortis.robust"""
