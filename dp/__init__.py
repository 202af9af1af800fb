"""fortis.dp"""
