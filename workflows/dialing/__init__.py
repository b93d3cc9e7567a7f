"""Dialing discipline: attempts per plan day, touches, improper rejections."""
