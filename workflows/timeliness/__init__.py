"""Timeliness control: was each new lead processed by its control time?"""
